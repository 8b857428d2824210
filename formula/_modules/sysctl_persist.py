"""
sysctl_persist: kernel settings applied now and kept in a sysctl.d file that really wins.

Salt's ``sysctl.present`` writes ``99-salt.conf``, which sorts before Debian/Ubuntu's
``99-sysctl.conf`` (the link to ``/etc/sysctl.conf``), so an old value there wins at boot.
This module writes a file that sorts after it, works out which other file would still set a
different value later (at boot: systemd-sysctl's order; ``sysctl --system``: procps reads
``/etc/sysctl.conf`` last of all), and writes the running values through ``/proc/sys``.
Standard library and salt only.

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
KEY_RE = re.compile(r"^[A-Za-z0-9_-]+([./][A-Za-z0-9_-]+)+$")
HEADER = (
    "# Managed by the serverfix Salt formula (runbook Phase 4); changes here are overwritten.\n"
    "# Named to sort after 99-sysctl.conf (/etc/sysctl.conf) so these values win at boot.\n"
)


def __virtual__():
    if not os.path.isdir(PROC_SYS):
        return (False, "sysctl_persist: /proc/sys is missing (not Linux, or /proc not mounted)")
    return __virtualname__


def _normalize_key(key):
    """``vm/swappiness`` and ``vm.swappiness`` are the same key (sysctl.d allows both)."""
    return str(key).strip().lstrip("-").replace("/", ".")


def _normalize_value(value):
    """Values compare by their words: ``'4096\\t87380'`` equals ``'4096 87380'``."""
    return " ".join(str(value).split())


def _parse_conf(text):
    """A sysctl.d file's settings as ``{key: value}`` (the last one wins, as when applied)."""
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        settings[_normalize_key(key)] = _normalize_value(value)
    return settings


def _render(values):
    """The managed file's content for ``values`` (sorted, one ``key = value`` a line)."""
    body = "".join(
        f"{_normalize_key(k)} = {_normalize_value(v)}\n" for k, v in sorted(values.items())
    )
    return HEADER + body


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


def _read(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read()


def config_files(dirs=CONF_DIRS):
    """
    The sysctl.d files applied at boot, in the order they are applied.

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.config_files
    """
    listing = []
    for directory in dirs:
        try:
            listing.append((directory, os.listdir(directory)))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return _boot_order(listing)


def _settings_of(path):
    try:
        return _parse_conf(_read(path))
    except (FileNotFoundError, IsADirectoryError):
        return {}


def overrides(path, values, dirs=CONF_DIRS, sysctl_conf=SYSCTL_CONF):
    """
    Messages for every other file that would still set one of ``values`` differently after
    ``path``: later in the boot order (systemd-sysctl), and ``sysctl_conf``, which procps'
    ``sysctl --system`` applies last of all. Read-only.

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.overrides /etc/sysctl.d/99-zz-serverfix.conf '{"vm.swappiness": 10}'
    """
    wanted = {_normalize_key(k): _normalize_value(v) for k, v in values.items()}
    order = config_files(dirs)
    real = os.path.realpath(path)
    position = next((i for i, f in enumerate(order) if os.path.realpath(f) == real), None)
    messages = []
    if position is None:
        shadow = [f for f in order if os.path.basename(f) == os.path.basename(path)]
        if shadow:
            messages.append(
                f"{shadow[0]} has the same name as {path} in a directory that takes precedence: "
                f"{path} would not be read at all; rename one of them"
            )
        later = [
            f
            for f in order
            if os.fsencode(os.path.basename(f)) > os.fsencode(os.path.basename(path))
        ]
    else:
        later = order[position + 1 :]
    for other in later:
        for key, value in _settings_of(other).items():
            if key in wanted and value != wanted[key]:
                messages.append(
                    f"{other} sets {key} = {value} after {path} at boot (systemd-sysctl), "
                    f"so {wanted[key]} would not last a reboot: remove that line"
                )
    if sysctl_conf:
        for key, value in _settings_of(sysctl_conf).items():
            if key in wanted and value != wanted[key]:
                messages.append(
                    f"{sysctl_conf} sets {key} = {value}; `sysctl --system` (procps) applies that file "
                    f"last, over {path}: remove that line"
                )
    return messages


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
        try:
            result[_normalize_key(key)] = _normalize_value(_read(_proc_path(key)))
        except FileNotFoundError:
            result[_normalize_key(key)] = None
    return result


def plan(path, values, dirs=CONF_DIRS, sysctl_conf=SYSCTL_CONF):
    """
    What :func:`apply` would change: ``{"changes", "warnings"}``. ``changes`` has one entry per
    running value that differs (``{key: {old, new}}``) and one for ``path`` when its content
    differs; ``warnings`` are :func:`overrides`' messages. Read-only; the state's test mode
    reports exactly this.

    Raises one ``CommandExecutionError`` (every problem in ``info["errors"]``) for keys that are
    not sysctl keys or that this kernel lacks, values that are not one line, a missing directory
    or a read-only ``/proc/sys``.

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.plan /etc/sysctl.d/99-zz-serverfix.conf '{"vm.swappiness": 10}'
    """
    errors, changes = [], {}
    if not isinstance(values, dict) or not values:
        raise SaltInvocationError("values: expected a mapping of sysctl keys to values")
    wanted = {}
    for key, value in values.items():
        if not KEY_RE.match(str(key)):
            errors.append(f"{key!r} is not a sysctl key (e.g. vm.swappiness)")
        elif not _single_line(value):
            errors.append(f"{key}: {value!r} is not a single-line value")
        else:
            wanted[_normalize_key(key)] = _normalize_value(value)
    if not os.path.isdir(os.path.dirname(path)):
        errors.append(f"{os.path.dirname(path)} does not exist: cannot write {path}")
    current = runtime(wanted)
    for key, value in wanted.items():
        if current[key] is None:
            errors.append(f"{key}: this kernel has no such setting ({_proc_path(key)} is missing)")
        elif current[key] != value:
            if not os.access(_proc_path(key), os.W_OK):
                errors.append(
                    f"{key}: {_proc_path(key)} is not writable here (read-only /proc/sys: a container? "
                    "systemd-nspawn needs SYSTEMD_NSPAWN_API_VFS_WRITABLE=yes)"
                )
            changes[key] = {"old": current[key], "new": value}
    __utils__["serverfix_errors.raise_problems"](errors)
    try:
        old_text = _read(path)
    except FileNotFoundError:
        old_text = None
    if old_text != _render(wanted):
        changes[path] = {"old": None if old_text is None else _parse_conf(old_text), "new": wanted}
    return {"changes": changes, "warnings": overrides(path, wanted, dirs, sysctl_conf)}


def _single_line(value):
    return (
        isinstance(value, (int, str))
        and not isinstance(value, bool)
        and "\n" not in str(value)
        and str(value).strip() != ""
    )


def apply(path, values, dirs=CONF_DIRS, sysctl_conf=SYSCTL_CONF):
    """
    Write ``values`` to the running kernel and persist them in ``path`` (atomically, 0644,
    a backup of an older version kept). Refuses, changing nothing, when :func:`plan` raises.

    Returns the :func:`plan` it carried out.

    CLI Example:

    .. code-block:: bash

        salt '*' sysctl_persist.apply /etc/sysctl.d/99-zz-serverfix.conf '{"vm.swappiness": 10}'
    """
    try:
        result = plan(path, values, dirs, sysctl_conf)
    except CommandExecutionError as exc:
        problems = __utils__["serverfix_errors.problems"](exc)
        __utils__["serverfix_errors.raise_problems"](problems, prefix="Nothing was changed: ")
    wanted = {_normalize_key(k): _normalize_value(v) for k, v in values.items()}
    if path in result["changes"]:
        if os.path.exists(path):
            __utils__["serverfix_files.backup"](path)
        __utils__["serverfix_files.atomic_write"](
            path, _render(wanted).encode(), mode=0o644, uid=0, gid=0
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
