"""
redis.conf read as Redis reads it, for the ``redis_server`` module: lines end at ``\\n`` only,
``include`` is followed where it stands (globs, relative to Redis's working directory, nested),
the last directive wins; and the in-place edit plan. Bytes that are not UTF-8 are kept
(``surrogateescape``). Reached as ``__utils__["serverfix_redisconf.<name>"]``; stdlib + salt.
"""

import glob
import os
import re

from salt.exceptions import CommandExecutionError

SECRET_DIRECTIVES = ("requirepass", "masterauth")
MASK = "<secret>"
MANAGED_MARK = "# managed by serverfix (see the formula's pillar.example)"
# the marker of earlier versions, still recognised in files they edited (content, not a pillar key)
OLD_MARKS = ("# serverfix: managed below (see the formula's pillar.example)",)


# Redis reads a config line by line at "\n" only, trims " \t\r\n" and splits arguments at
# C isspace() characters; str.splitlines()/str.split() also break at form feeds, U+0085, ...
_ARG_SEP = re.compile(r"[ \t\n\v\f\r]+")
_MAX_INCLUDE_DEPTH = 16


def split(line):
    """``key``, ``args`` of an active directive line, or ``None`` for comments and blanks."""
    stripped = line.strip(" \t\r\n")
    if not stripped or stripped.startswith("#"):
        return None
    parts = [part for part in _ARG_SEP.split(stripped) if part]
    return parts[0].lower(), parts[1:]


def unquote(value):
    """A value as Redis reads it when it is one quoted argument (``""`` is empty)."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def split_lines(text):
    """Lines ending in ``\n`` (kept), as Redis splits them; other separators stay inside."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


def read_lines(path):
    """The lines of ``path`` (see :func:`split_lines`); raises ``CommandExecutionError``."""
    try:
        with open(path, "rb") as handle:
            return split_lines(handle.read().decode("utf-8", "surrogateescape"))
    except FileNotFoundError:
        raise CommandExecutionError(f"{path}: no such file") from None
    except OSError as exc:
        raise CommandExecutionError(f"{path}: cannot read it ({exc.strerror})") from None


def include_paths(pattern, cwd):
    """The files an ``include`` names, as Redis opens them: relative to its working directory
    (``/`` under systemd, then each ``dir`` line read so far); a glob in sorted order, and a
    glob that matches nothing is no error."""
    full = os.path.join(cwd, pattern)
    if any(char in pattern for char in "*?["):
        return sorted(glob.glob(full))
    return [full]


def walk(lines, path, where, depth=0):
    """``(key, args, file)`` of every directive Redis reads from ``lines`` (the content of
    ``path``), included files expanded where their ``include`` line stands. ``where`` holds the
    working directory (``cwd``), which a ``dir`` line changes as Redis's ``chdir`` does."""
    if depth > _MAX_INCLUDE_DEPTH:
        raise CommandExecutionError(f"{path}: include nested more than {_MAX_INCLUDE_DEPTH} deep")
    for line in lines:
        parsed = split(line)
        if not parsed:
            continue
        key, args = parsed
        if key == "include" and args:
            for included in include_paths(unquote(args[0]), where["cwd"]):
                yield from walk(read_lines(included), included, where, depth + 1)
            continue
        if key == "dir" and args:
            where["cwd"] = os.path.join(where["cwd"], unquote(args[0]))
        yield key, args, path


def effective(path, lines=None, cwd="/"):
    """``{directive: (args, file)}``: the last value Redis reads for each directive."""
    result = {}
    lines = read_lines(path) if lines is None else lines
    for key, args, source in walk(lines, path, {"cwd": cwd}):
        result[key] = (args, source)
    return result


def shown(key, value, mask=True):
    """A value for output: secrets masked, an empty one shown as empty."""
    if key in SECRET_DIRECTIVES and value is not None and unquote(value) == "":
        return ""
    return MASK if mask and key in SECRET_DIRECTIVES and value else value


def same(key, current_args, wanted):
    """Whether the directive's arguments already say ``wanted`` (``None``: unset)."""
    if current_args is None:
        return wanted is None
    if wanted is None:
        return False
    current = " ".join(current_args)
    if key == "bind":
        return current_args == wanted.split()
    if key in SECRET_DIRECTIVES:
        return unquote(current) == wanted
    return current.lower() == wanted.lower()


def plan(path, settings):
    """The new content of ``path`` with ``settings`` and the (masked) changes; see
    ``redis_server.config_plan``. Raises when an included file would override the edit."""
    lines = read_lines(path)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    active = {}
    for index, line in enumerate(lines):
        parsed = split(line)
        if parsed:
            active.setdefault(parsed[0], []).append((index, parsed[1]))
    changes = {}
    appended = []
    for key, wanted in settings.items():
        key = key.lower()
        wanted = None if wanted is None else str(wanted)
        found = active.get(key, [])
        current_args = found[-1][1] if found else None
        if same(key, current_args, wanted) and len(found) <= 1:
            continue
        old = " ".join(current_args) if current_args is not None else None
        changes[key] = {"old": shown(key, old), "new": shown(key, wanted)}
        # the first active line takes the new value; later duplicates are commented out
        for position, (index, _) in enumerate(found):
            ending = newline if lines[index].endswith(("\n", "\r")) else ""
            if position == 0 and wanted is not None:
                lines[index] = f"{key} {wanted}{ending}"
            else:
                lines[index] = (
                    f"# {lines[index].rstrip(chr(13) + chr(10))}  {MANAGED_MARK[2:]}{ending}"
                )
        if not found and wanted is not None:
            appended.append(f"{key} {wanted}{newline}")
    if appended:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        if not any(mark + newline in lines for mark in (MANAGED_MARK, *OLD_MARKS)):
            lines.append(newline)
            lines.append(MANAGED_MARK + newline)
        lines.extend(appended)
    check_includes(path, lines, settings)
    return {"content": "".join(lines), "changes": changes}


def check_includes(path, lines, settings):
    """Refuse an edit that an included file would override: Redis reads its value last."""
    problems = []
    final = effective(path, lines)
    for key, wanted in settings.items():
        key = key.lower()
        wanted = None if wanted is None else str(wanted)
        args, source = final.get(key, (None, path))
        if source != path and not same(key, args, wanted):
            problems.append(
                f"{source} (included by {path}) sets {key} {shown(key, ' '.join(args))}, "
                f"which Redis reads after the line this edit would make "
                f"({key} {shown(key, wanted) if wanted is not None else '(unset)'}): "
                f"change or remove it in {source}, or move the include above; "
                f"only {path} is edited"
            )
    if problems:
        raise CommandExecutionError("\n".join(problems), info={"errors": problems})
