"""
The kernel's swap and mount tables as text: ``/etc/fstab`` lines for a swap file, ``/proc/swaps``
and ``/proc/self/mountinfo``. All three write a space in a path as ``\\040``. Pure functions on
text (nothing is read or written here); standard library only.

Reached from the ``swapfile`` module as ``__utils__["serverfix_fstab.with_swap"]`` and friends.
"""

import os

_FSTAB_ESCAPES = {" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134"}


def unescape_octal(field):
    r"""Undo the ``\040``-style escapes the kernel and fstab use for spaces in paths."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def escape(path):
    """``path`` written the way fstab expects (spaces as ``\\040``)."""
    return "".join(_FSTAB_ESCAPES.get(char, char) for char in path)


def parse_proc_swaps(text):
    """
    ``/proc/swaps`` as a list of ``{filename, type, size_bytes, used_bytes, priority, deleted}``.
    The kernel reports sizes in KiB, and the size without the header page.
    """
    entries = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        name = unescape_octal(" ".join(fields[:-4]))
        deleted = name.endswith(" (deleted)")
        if deleted:
            name = name[: -len(" (deleted)")]
        entries.append(
            {
                "filename": name,
                "type": fields[-4],
                "size_bytes": int(fields[-3]) * 1024,
                "used_bytes": int(fields[-2]) * 1024,
                "priority": int(fields[-1]),
                "deleted": deleted,
            }
        )
    return entries


def mount_of(path, mountinfo_text):
    """
    The mount holding ``path`` (already resolved): ``{mount_point, fs_type, source, options}``
    from ``/proc/self/mountinfo`` text. The longest matching mount point wins; of stacked mounts
    on the same point, the last one (the visible one).
    """
    best = None
    for line in mountinfo_text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        point = unescape_octal(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best["mount_point"])):
            best = {
                "mount_point": point,
                "fs_type": tail[0],
                "source": unescape_octal(tail[1]),
                "options": fields[5].split(","),
            }
    return best


def _same_path(spec, path):
    return spec == path or (
        spec.startswith("/") and os.path.realpath(spec) == os.path.realpath(path)
    )


def entries(text, path):
    """The lines of fstab ``text`` whose device field is ``path``: ``[(index, line, fields)]``."""
    found = []
    for index, line in enumerate(text.splitlines()):
        fields = line.split()
        if fields and not fields[0].startswith("#") and _same_path(unescape_octal(fields[0]), path):
            found.append((index, line, fields))
    return found


def swap_line(path):
    """The one fstab line written for swap file ``path``."""
    return f"{escape(path)} none swap sw 0 0"


def with_swap(text, path):
    """
    ``text`` with exactly one swap line for ``path``: kept as is when there is exactly one
    (the admin's options such as ``pri=`` stay), else the first becomes :func:`swap_line` and
    the others go. Returns the new text, or ``None`` when nothing needs to change.
    """
    found = entries(text, path)
    if len(found) == 1 and len(found[0][2]) >= 3 and found[0][2][2] == "swap":
        return None
    lines = text.splitlines()
    if not found:
        return text + ("" if not text or text.endswith("\n") else "\n") + swap_line(path) + "\n"
    drop = {index for index, _, _ in found[1:]}
    lines[found[0][0]] = swap_line(path)
    return "\n".join(line for i, line in enumerate(lines) if i not in drop) + "\n"


def without(text, path):
    """``text`` with every line for ``path`` removed, or ``None`` when there is none."""
    found = entries(text, path)
    if not found:
        return None
    drop = {index for index, _, _ in found}
    kept = [line for i, line in enumerate(text.splitlines()) if i not in drop]
    return "\n".join(kept) + ("\n" if kept else "")
