"""
The kernel's swap and mount tables as text: ``/etc/fstab`` lines for a swap file, ``/proc/swaps``
and ``/proc/self/mountinfo``. All three write a space in a path as ``\\040``. Pure functions on
text (nothing is read or written here); standard library only.

fstab text is the file's bytes decoded as UTF-8 with ``surrogateescape`` (:func:`decode`), so
bytes that are not UTF-8 (a Latin-1 comment) come back unchanged from :func:`encode`. Lines are
cut at ``\\n`` only, as libmount does: a ``\\r\\n`` ending, a missing final newline, form feeds
and other ``str.splitlines()`` separators inside a line stay exactly as they were. Fields are
separated by spaces and tabs only.

Reached from the ``swapfile`` module as ``__utils__["serverfix_fstab.with_swap"]`` and friends.
"""

import os
import re

_FSTAB_ESCAPES = {" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134"}
_OCTAL = re.compile(rb"\\([0-7]{3})")
_BLANKS = re.compile(r"[ \t]+")
# options that keep a swap line from being swapped on at boot (swapon -a, systemd-fstab-generator)
NOT_AT_BOOT = ("noauto",)


def decode(data):
    """fstab bytes as text that :func:`encode` turns back into the same bytes."""
    return data.decode("utf-8", "surrogateescape")


def encode(text):
    """The bytes of text from :func:`decode` (bytes that were not UTF-8 come back as they were)."""
    return text.encode("utf-8", "surrogateescape")


def shown(line):
    r"""A line fit for a message or a return value: bytes that are not UTF-8 as ``\xNN``."""
    return encode(line).decode("utf-8", "backslashreplace")


def unescape_octal(field):
    r"""Undo the ``\040``-style escapes the kernel and fstab use for spaces in paths."""
    raw = _OCTAL.sub(lambda match: bytes([int(match.group(1), 8) & 0xFF]), encode(field))
    return decode(raw)


def escape(path):
    """``path`` written the way fstab expects (spaces as ``\\040``)."""
    return "".join(_FSTAB_ESCAPES.get(char, char) for char in path)


def parse_proc_swaps(text):
    """
    ``/proc/swaps`` as a list of ``{filename, type, size_bytes, used_bytes, priority, deleted}``.
    The kernel reports sizes in KiB, and the size without the header page.
    """
    found = []
    for line in text.split("\n")[1:]:
        cols = line.split()
        if len(cols) < 5:
            continue
        name = unescape_octal(" ".join(cols[:-4]))
        deleted = name.endswith(" (deleted)")
        if deleted:
            name = name[: -len(" (deleted)")]
        found.append(
            {
                "filename": name,
                "type": cols[-4],
                "size_bytes": int(cols[-3]) * 1024,
                "used_bytes": int(cols[-2]) * 1024,
                "priority": int(cols[-1]),
                "deleted": deleted,
            }
        )
    return found


def mount_of(path, mountinfo_text):
    """
    The mount holding ``path`` (already resolved): ``{mount_point, fs_type, source, options}``
    from ``/proc/self/mountinfo`` text. The longest matching mount point wins; of stacked mounts
    on the same point, the last one (the visible one).
    """
    best, longest = None, -1
    for line in mountinfo_text.split("\n"):
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        cols, tail = left.split(), right.split()
        point = unescape_octal(cols[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= longest:
            longest = len(point)
            best = {
                "mount_point": point,
                "fs_type": tail[0],
                "source": unescape_octal(tail[1]),
                "options": cols[5].split(","),
            }
    return best


def lines(text):
    r"""``text`` cut at ``\n`` only: ``[(line, ending)]``, ending ``"\r\n"``, ``"\n"`` or ``""``."""
    parts = text.split("\n")
    out = []
    for part in parts[:-1]:
        out.append((part[:-1], "\r\n") if part.endswith("\r") else (part, "\n"))
    if parts[-1]:
        out.append((parts[-1], ""))
    return out


def fields(line):
    """The fields of one fstab line (split at spaces and tabs, as libmount does)."""
    return [field for field in _BLANKS.split(line.rstrip("\r")) if field]


def _same_path(spec, path):
    return spec == path or (
        spec.startswith("/") and os.path.realpath(spec) == os.path.realpath(path)
    )


def entries(text, path):
    """The lines of fstab ``text`` whose device field is ``path``: ``[(index, line, fields)]``."""
    found = []
    for index, (line, _) in enumerate(lines(text)):
        parts = fields(line)
        if parts and not parts[0].startswith("#") and _same_path(unescape_octal(parts[0]), path):
            found.append((index, line, parts))
    return found


def swap_line(path):
    """The one fstab line written for swap file ``path``."""
    return f"{escape(path)} none swap sw 0 0"


def persistent(parts):
    """Whether the fields of a line swap the file on at boot: type ``swap``, no ``noauto``."""
    options = parts[3].split(",") if len(parts) > 3 else []
    return len(parts) >= 3 and parts[2] == "swap" and not set(options) & set(NOT_AT_BOOT)


def review(text, path):
    """
    What it takes for ``text`` to hold exactly one line that swaps ``path`` on at boot:
    ``(new_text, reason)``, ``(None, "")`` when nothing needs to change. The first line that
    does so is kept as it is (the admin's options such as ``pri=`` stay) and the other lines for
    ``path`` go; without one, the first line for ``path`` becomes :func:`swap_line` (or it is
    added). Every other line stays byte for byte, with its own line ending.
    """
    found = entries(text, path)
    good = [index for index, _, parts in found if persistent(parts)]
    if len(found) == 1 and good:
        return None, ""
    cut = lines(text)
    if not found:
        if cut and not cut[-1][1]:  # no newline at the end: end that line the way the file does
            ending = next((end for _, end in cut if end), "\n")
            cut[-1] = (cut[-1][0], ending)
        ending = cut[0][1] if cut else "\n"
        return "".join(a + b for a, b in cut) + swap_line(path) + ending, "no line for it"
    keep = good[0] if good else found[0][0]
    if not good:
        cut[keep] = (swap_line(path), cut[keep][1])
    drop = {index for index, _, _ in found} - {keep}
    if drop:
        reason = f"{len(found)} lines for it"
    elif found[0][2][2:3] == ["swap"]:
        reason = "its line has noauto: it would not be swapped on at boot"
    else:
        reason = "its line is not a swap line"
    return "".join(a + b for i, (a, b) in enumerate(cut) if i not in drop), reason


def with_swap(text, path):
    """:func:`review`'s new text alone: ``None`` when nothing needs to change."""
    return review(text, path)[0]


def without(text, path):
    """``text`` with every line for ``path`` removed, or ``None`` when there is none."""
    drop = {index for index, _, _ in entries(text, path)}
    if not drop:
        return None
    return "".join(a + b for i, (a, b) in enumerate(lines(text)) if i not in drop)
