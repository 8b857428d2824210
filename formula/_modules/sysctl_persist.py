"""
sysctl_persist: kernel settings applied now and kept in a sysctl.d file that really wins.

Salt's ``sysctl.present`` writes ``99-salt.conf``, which sorts before Debian/Ubuntu's
``99-sysctl.conf`` (the link to ``/etc/sysctl.conf``), so an old value there wins at boot.
This module writes a file that sorts after it, works out which other file would still set a
different value later (at boot: systemd-sysctl's order; ``sysctl --system``: procps reads
``/etc/sysctl.conf`` last of all), and writes the running values through ``/proc/sys``.
Standard library and salt only.

The file is written whole, so it must be the formula's own: :func:`plan` refuses a symlink
(Debian's ``99-sysctl.conf``), a file without the :data:`MARKER` header and a path in a vendor
directory. Files are read as bytes: bytes that are not UTF-8 never crash a read, and the lines
of the managed file that are not its settings are kept byte for byte.

Errors follow Salt's contract: :func:`plan` raises one ``CommandExecutionError`` listing every
problem in ``info["errors"]`` (``SaltInvocationError`` when ``values`` is not a mapping); a later
file that would override a value is a warning, returned, not an error.
"""

import errno
import logging
import os
import re
from typing import TYPE_CHECKING, Any

from salt.exceptions import CommandExecutionError, SaltInvocationError

if TYPE_CHECKING:
    __utils__: dict[str, Any]

log = logging.getLogger(__name__)

__virtualname__ = "sysctl_persist"

PROC_SYS = "/proc/sys"
# systemd-sysctl and procps `sysctl --system`: a file name in an earlier directory hides the same
# name in a later one; the files then apply in name order, whatever directory they are in
CONF_DIRS = (
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
)
SYSCTL_CONF = "/etc/sysctl.conf"
# where the backup of an older version of the file goes (its path mirrored; '' = next to it)
BACKUP_DIR = "/var/backups/serverfix"
# the drop-in is written whole: never into a directory of packages or of the running system
VENDOR_DIRS = CONF_DIRS[1:]
KEY_RE = re.compile(r"^[A-Za-z0-9_-]+([./][A-Za-z0-9_-]+)+$")
HEADER = (
    "# Managed by the serverfix Salt formula (runbook Phase 4); changes here are overwritten.\n"
    "# Named to sort after 99-sysctl.conf (/etc/sysctl.conf) so these values win at boot.\n"
)
# the start of every file this module wrote (the header's first line): only such a file is rewritten
MARKER = HEADER.split("(", 1)[0].rstrip().encode()
# what systemd-sysctl and procps strip around keys and values (ASCII only)
BLANKS = " \t\n\r\f\v"


def __virtual__():
    if not os.path.isdir(PROC_SYS):
        return (False, "sysctl_persist: /proc/sys is missing (not Linux, or /proc not mounted)")
    return __virtualname__


def _normalize_key(key):
    """``vm/swappiness`` and ``vm.swappiness`` are the same key (sysctl.d allows both)."""
    return str(key).strip(BLANKS).lstrip("-").replace("/", ".")


def _normalize_value(value):
    """Values compare by their words: ``'4096\\t87380'`` equals ``'4096 87380'``."""
    words = str(value)
    for blank in BLANKS[1:]:
        words = words.replace(blank, " ")
    return " ".join(word for word in words.split(" ") if word)


def _setting(line):
    """``(key, value)`` of one sysctl.d line (``str``), or ``None`` for a comment or blank line."""
    line = line.strip(BLANKS)
    if not line or line[0] in "#;" or "=" not in line:
        return None
    key, _, value = line.partition("=")
    return _normalize_key(key), _normalize_value(value)


def _decode(data):
    """File bytes as text for parsing; bytes that are not UTF-8 survive (surrogateescape)."""
    return data.decode("utf-8", "surrogateescape")


def _shown(text):
    """``text`` safe to print or serialize: undecodable bytes as ``\\xNN`` escapes."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _lines(data):
    """``data`` split after each ``\\n`` only (the tools' one line separator), ends kept."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    return lines + ([parts[-1]] if parts[-1] else [])


def _parse_conf(text):
    """A sysctl.d file's settings (``str`` or ``bytes``) as ``{key: value}`` (the last one
    wins, as when applied); lines split at ``\\n`` only, as the tools do."""
    if isinstance(text, bytes):
        text = _decode(text)
    settings = {}
    for line in text.split("\n"):
        found = _setting(line)
        if found:
            settings[found[0]] = found[1]
    return settings


def _render(values):
    """The managed file's content for ``values`` (sorted, one ``key = value`` a line)."""
    body = "".join(
        f"{_normalize_key(k)} = {_normalize_value(v)}\n" for k, v in sorted(values.items())
    )
    return HEADER + body


def _content(wanted, old):
    """
    The managed file's bytes for ``wanted`` (normalized): :func:`_render` for a new file. For
    an existing one of ours (``old`` starts with :data:`MARKER`) every line that is not a
    setting (the header, comments, bytes that are not UTF-8, its line ends) is kept byte for
    byte, a setting already right is kept as written, a wrong one is replaced in place, and
    settings of other keys or repeated ones are dropped; missing keys are appended in order.
    """
    if old is None or not old.startswith(MARKER):
        return _render(wanted).encode()
    out, seen = [], set()
    for line in _lines(old):
        found = _setting(_decode(line))
        if found is None:
            out.append(line)
            continue
        key, value = found
        if key not in wanted or key in seen:
            continue
        seen.add(key)
        end = b"\r\n" if line.endswith(b"\r\n") else b"\n"
        keep = value == wanted[key] and line.endswith(b"\n")
        out.append(line if keep else f"{key} = {wanted[key]}".encode() + end)
    if out and not out[-1].endswith(b"\n"):
        out[-1] += b"\n"
    out += [f"{k} = {v}\n".encode() for k, v in sorted(wanted.items()) if k not in seen]
    return b"".join(out)


def _boot_order(names_by_dir):
    """
    The files systemd-sysctl applies, in order, from ``[(directory, [file names]), ...]`` given
    in precedence order: the first directory holding a name wins it; names sort bytewise.
    """
    chosen = {}
    for directory, names in names_by_dir:
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = os.path.join(directory, name)
    return [chosen[name] for name in sorted(chosen, key=os.fsencode)]


def _read_bytes(path):
    """The bytes of ``path``, ``None`` when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _listing(dirs, extra=None):
    """``[(directory, [names])]`` of ``dirs`` (absolute, missing ones skipped), with the name of
    ``extra`` (a path that may not exist yet) added to its directory; also whether ``extra``'s
    directory is one of ``dirs`` (compared as given and with symlinks resolved)."""
    listing, placed = [], extra is None
    where = os.path.dirname(os.path.abspath(extra)) if extra else None
    for directory in dirs:
        directory = os.path.abspath(directory)
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        if not placed and where in (directory, os.path.realpath(directory)):
            placed = True
            names.append(os.path.basename(extra))
            listing.append((where, names))
            continue
        listing.append((directory, names))
    return listing, placed


def config_files(dirs=CONF_DIRS):
    """
    The sysctl.d files applied at boot, in the order they are applied (systemd-sysctl's rule,
    :func:`_boot_order`: a name in an earlier directory masks it in later ones, then all files
    apply in name order).

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.config_files
    """
    return _boot_order(_listing(dirs)[0])


def _settings_of(path):
    try:
        data = _read_bytes(path)
    except (IsADirectoryError, PermissionError):
        return {}
    return _parse_conf(data) if data is not None else {}


def overrides(path, values, dirs=CONF_DIRS, sysctl_conf=SYSCTL_CONF):
    """
    Messages for every reason one of ``values`` written to ``path`` would not hold after a
    reboot or ``sysctl --system``, with ``path`` placed where systemd-sysctl would read it:
    ``path`` is in none of ``dirs`` or does not end in ``.conf`` (never read), a same-named file
    in an earlier directory of ``dirs`` masks it (never read), the last file after it in the boot
    order that sets a key sets it differently, or ``sysctl_conf`` (which procps' ``sysctl
    --system`` applies last of all) does. A same-named file in a later directory is masked by
    ``path`` and is no problem. Read-only.

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.overrides /etc/sysctl.d/99-zz-serverfix.conf '{"vm.swappiness": 10}'
    """
    wanted = _wanted(values)
    absolute = os.path.abspath(path)
    listing, placed = _listing(dirs, absolute)
    order = _boot_order(listing)
    messages = []
    if not placed or not absolute.endswith(".conf"):
        messages.append(
            f"{path} is not read at boot: systemd-sysctl reads only *.conf files in "
            f"{', '.join(dirs)}; name it e.g. /etc/sysctl.d/99-zz-serverfix.conf"
        )
        later = []
    elif absolute not in order:
        masking = next(f for f in order if os.path.basename(f) == os.path.basename(absolute))
        messages.append(
            f"{masking} has the same name as {path} in a directory that takes precedence "
            f"(systemd-sysctl reads {', '.join(dirs)} in that order): {path} would not be "
            "read at all; rename it"
        )
        later = []
    else:
        later = order[order.index(absolute) + 1 :]
    last = {}  # key -> (file, value) of the last later file that sets it
    for other in later:
        if os.path.realpath(other) == os.path.realpath(absolute):
            continue
        for key, value in _settings_of(other).items():
            if key in wanted:
                last[key] = (other, value)
    for key, (other, value) in sorted(last.items()):
        if value != wanted[key]:
            messages.append(
                f"{other} sets {key} = {value} after {path} at boot (systemd-sysctl), "
                f"so {wanted[key]} would not last a reboot: remove that line"
            )
    if sysctl_conf:
        for key, value in _settings_of(sysctl_conf).items():
            if key in wanted and value != wanted[key]:
                messages.append(
                    f"{sysctl_conf} sets {key} = {value}; `sysctl --system` (procps) applies "
                    f"that file last, over {path}: remove that line"
                )
    return [_shown(message) for message in messages]


def _proc_path(key):
    return os.path.join(PROC_SYS, *_normalize_key(key).split("."))


def runtime(keys):
    """
    The running kernel's values of ``keys`` (``None`` for a key this kernel does not have).

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.runtime '["vm.swappiness", "vm.vfs_cache_pressure"]'
    """
    result = {}
    for key in keys:
        data = _read_bytes(_proc_path(key))
        result[_normalize_key(key)] = None if data is None else _normalize_value(_decode(data))
    return result


def _wanted(values):
    return {_normalize_key(k): _normalize_value(v) for k, v in values.items()}


def plan(path, values, dirs=CONF_DIRS, sysctl_conf=SYSCTL_CONF):
    """
    What :func:`apply` would change: ``{"changes", "warnings"}``. ``changes`` has one entry per
    running value that differs (``{key: {old, new}}``) and one for ``path`` when its content
    differs; ``warnings`` are :func:`overrides`' messages. Read-only; the state's test mode
    reports exactly this.

    Raises one ``CommandExecutionError`` (every problem in ``info["errors"]``) for keys that are
    not sysctl keys or that this kernel lacks, values that are not one line of printable ASCII,
    a missing directory, a read-only ``/proc/sys``, and a ``path`` that is not this formula's
    own file (a symlink such as Debian's ``99-sysctl.conf``, a file without :data:`MARKER`, a
    file in a vendor directory: ``serverfix_files.check_owned``), since it is written whole.

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.plan /etc/sysctl.d/99-zz-serverfix.conf '{"vm.swappiness": 10}'
    """
    errors, arguments, changes = [], [], {}
    if not isinstance(values, dict) or not values:
        raise SaltInvocationError("values: expected a mapping of sysctl keys to values")
    wanted = {}
    for key, value in values.items():
        if not KEY_RE.match(str(key)):
            errors.append(f"{key!r} is not a sysctl key (e.g. vm.swappiness)")
        elif not _single_line(value):
            errors.append(f"{key}: {value!r} is not a single-line value of printable ASCII")
        else:
            wanted[_normalize_key(key)] = _normalize_value(value)
    arguments += ["values"] * len(errors)
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        errors.append(
            f"{os.path.dirname(os.path.abspath(path))} does not exist: cannot write {path}"
        )
    else:
        try:
            __utils__["serverfix_files.check_owned"](path, MARKER, _vendor_dirs(dirs))
        except CommandExecutionError as exc:
            errors += __utils__["serverfix_errors.problems"](exc)
    arguments += ["path"] * (len(errors) - len(arguments))
    current = runtime(wanted)
    for key, value in wanted.items():
        if current[key] is None:
            errors.append(f"{key}: this kernel has no such setting ({_proc_path(key)} is missing)")
        elif current[key] != value:
            if not os.access(_proc_path(key), os.W_OK):
                errors.append(
                    f"{key}: {_proc_path(key)} is not writable here (read-only /proc/sys: a "
                    "container? systemd-nspawn needs SYSTEMD_NSPAWN_API_VFS_WRITABLE=yes)"
                )
            changes[key] = {"old": current[key], "new": value}
    if errors:  # info["arguments"]: which argument each problem is about, for the preflight
        arguments += ["values"] * (len(errors) - len(arguments))
        __utils__["serverfix_errors.raise_problems"](errors, arguments=arguments)
    old = _read_bytes(path)
    if old != _content(wanted, old):
        shown = None
        if old is not None:
            shown = {_shown(k): _shown(v) for k, v in _parse_conf(old).items()}
        changes[path] = {"old": shown, "new": wanted}
    return {"changes": changes, "warnings": overrides(path, wanted, dirs, sysctl_conf)}


def _vendor_dirs(dirs):
    """Where the managed file must not be: every sysctl.d directory but the first (``/etc``)."""
    return tuple(dict.fromkeys((*VENDOR_DIRS, *list(dirs)[1:])))


def _single_line(value):
    if not isinstance(value, (int, str)) or isinstance(value, bool):
        return False
    text = str(value)
    return text.strip() != "" and all(c == "\t" or " " <= c <= "~" for c in text)


def preflight(path, values, dirs=CONF_DIRS, sysctl_conf=SYSCTL_CONF):
    """
    Everything that would stop :func:`apply`, before anything changes: :func:`plan`'s problems
    (a ``path`` that is not this formula's own file among them). Read-only.

    Returns True when nothing stands in the way; else raises one ``CommandExecutionError``
    with every problem in ``info["errors"]``, each naming the key or the path and the fix, and
    in ``info["arguments"]`` the argument (``path`` or ``values``) each is about.

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.preflight /etc/sysctl.d/99-zz-serverfix.conf '{"vm.swappiness": 10}'
    """
    try:
        plan(path, values, dirs, sysctl_conf)
    except SaltInvocationError as exc:
        problem = __utils__["serverfix_errors.message"](exc)
        __utils__["serverfix_errors.raise_problems"]([problem], arguments=["values"])
    return True


def apply(path, values, dirs=CONF_DIRS, sysctl_conf=SYSCTL_CONF, backup_dir=BACKUP_DIR):
    """
    Write ``values`` to the running kernel and persist them in ``path`` (atomically, 0644, root,
    only when ``path`` is this formula's own file: see :func:`plan`). A backup of an older
    version goes below ``backup_dir`` (``path`` mirrored, default ``/var/backups/serverfix``,
    created 0700; ``''``: next to it). Refuses, changing nothing, when :func:`plan` raises.

    Returns the :func:`plan` it carried out, with ``backup``: the backup's path (or ``None``).

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.apply /etc/sysctl.d/99-zz-serverfix.conf '{"vm.swappiness": 10}'
    """
    __utils__["serverfix_files.check_backup_dir"](backup_dir)
    try:
        result = plan(path, values, dirs, sysctl_conf)
    except CommandExecutionError as exc:
        problems = __utils__["serverfix_errors.problems"](exc)
        __utils__["serverfix_errors.raise_problems"](problems, prefix="Nothing was changed: ")
    wanted = _wanted(values)
    result["backup"] = None
    if path in result["changes"]:
        old = _read_bytes(path)
        if old is not None:
            try:
                result["backup"] = __utils__["serverfix_files.backup"](path, backup_dir=backup_dir)
            except OSError as exc:
                raise CommandExecutionError(
                    f"{path}: cannot back it up below {backup_dir or 'its directory'} "
                    f"({exc.strerror}); nothing was changed"
                ) from None
        __utils__["serverfix_files.write_owned"](
            path,
            _content(wanted, old),
            MARKER,
            _vendor_dirs(dirs),
            mode=0o644,
            uid=0,
            gid=0,
        )
    for key, change in result["changes"].items():
        if key == path:
            continue
        try:
            with open(_proc_path(key), "w", encoding="ascii") as handle:
                handle.write(change["new"])
        except OSError as exc:
            reason = "the kernel rejected the value" if exc.errno == errno.EINVAL else exc.strerror
            raise CommandExecutionError(
                f"{key} = {change['new']}: {reason} ({path} is written)"
            ) from None
    return result
