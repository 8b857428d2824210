"""
swapfile: a swap file that is really there, really active and in fstab exactly once (Phase 4).

What Salt's ``mount.swap`` does not do: it creates the file (``fallocate``, or zeros where the
file system needs them), reads the truth from ``/proc/swaps`` and the swap header (never from
``file`` output), refuses before writing when the disk or the memory cannot take the change,
and says so when the kernel does not permit swap at all (a container).

swapon/swapoff are the system calls themselves (through ``ctypes``), so every failure carries
the kernel's errno instead of a localised message to parse; ``mkswap`` and ``fallocate`` are
util-linux's. The text of fstab, ``/proc/swaps`` and mountinfo is handled in
``_utils/serverfix_fstab.py``. Standard library and salt only.

Errors follow Salt's contract: :func:`plan`, :func:`plan_remove` and :func:`preflight` raise one
``CommandExecutionError`` listing every problem in ``info["errors"]``; a bad ``size`` raises
``SaltInvocationError``. Messages name the path or the argument and the fix.
"""

import ctypes
import ctypes.util
import errno
import logging
import os
import stat
from typing import TYPE_CHECKING, Any

from salt.exceptions import CommandExecutionError, SaltInvocationError

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]

log = logging.getLogger(__name__)

__virtualname__ = "swapfile"

FSTAB = "/etc/fstab"
# where the fstab backup goes (its path mirrored below it; '' = next to it)
BACKUP_DIR = "/var/backups/serverfix"
PROC_SWAPS = "/proc/swaps"
PROC_MEMINFO = "/proc/meminfo"
MOUNTINFO = "/proc/self/mountinfo"

MIN_SIZE = 1 << 20
SIGNATURE = b"SWAPSPACE2"

# file systems the kernel cannot swap to (swapon says EINVAL, or they vanish/lie about blocks)
NO_SWAP_FS = frozenset(
    "tmpfs ramfs overlay aufs zfs squashfs erofs iso9660 fuse fuseblk devtmpfs proc sysfs 9p "
    "virtiofs nfs nfs4 cifs smb3".split()
)


def __virtual__():
    if not os.path.exists(PROC_SWAPS):
        return (False, "swapfile: /proc/swaps is missing (not Linux, or /proc not mounted)")
    return __virtualname__


def _human(size):
    return __utils__["serverfix_swapplan.human"](size)


def _human_mib(size):
    return __utils__["serverfix_swapplan.human_mib"](size)


# ---------------------------------------------------------------- reading the system


def _read(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read()


def _fstab(name):
    """fstab's text (its bytes kept, see ``serverfix_fstab.decode``); ``""`` when missing."""
    try:
        with open(name, "rb") as handle:
            return __utils__["serverfix_fstab.decode"](handle.read())
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise CommandExecutionError(
            f"cannot read {name}: {exc.strerror}; make it a readable file (or pass fstab=)"
        ) from None


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _swap_call(name, path):
    """swapon(2)/swapoff(2) on ``path``; returns 0 or the errno."""
    func = getattr(_libc(), name)
    if name == "swapon":
        rc = func(os.fsencode(path), ctypes.c_int(0))
    else:
        rc = func(os.fsencode(path))
    return 0 if rc == 0 else ctypes.get_errno()


def swap_permitted():
    """
    Whether this process may swapon/swapoff at all: ``(True, '')`` or ``(False, reason)``.

    Asks the kernel with ``swapoff("/dev/null")``, which changes nothing: EINVAL ("not a swap
    area") means the call is allowed, EPERM means it is not (no CAP_SYS_ADMIN, or a container's
    seccomp filter such as systemd-nspawn's default).

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.swap_permitted
    """
    code = _swap_call("swapoff", "/dev/null")
    if code == errno.EPERM:
        return False, (
            "swapon/swapoff are not permitted here (EPERM): this looks like a container "
            "without CAP_SYS_ADMIN or with a seccomp filter (systemd-nspawn needs "
            "--system-call-filter=@swap). "
            "Create the swap on the host, or leave swap out of this run"
        )
    return True, ""


def active_swaps(proc_swaps=PROC_SWAPS):
    """
    Every active swap area, from ``/proc/swaps`` (the kernel's own list; tests point
    ``proc_swaps`` at a copy, since swap is kernel-global).

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.active_swaps
    """
    return __utils__["serverfix_fstab.parse_proc_swaps"](_read(proc_swaps))


def status(path, fstab=FSTAB):
    """
    What is at ``path`` now: the file, its swap header, whether the kernel uses it and its
    fstab lines. Read-only.

    Returns ``{path, exists, is_file, size_bytes, allocated_bytes, mode, uid, gid, is_swap,
    header_ok, holes, nocow, fs_type, mount_point, active, active_size_bytes, used_bytes,
    priority, fstab_lines}``. ``size_bytes`` is the file's size; ``active_size_bytes`` what
    ``/proc/swaps`` reports (one header page less).

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.status /swapfile
    """
    path = os.path.abspath(path)
    real = os.path.realpath(path)
    page = os.sysconf("SC_PAGE_SIZE")
    st = {
        "path": path,
        "exists": False,
        "is_file": False,
        "size_bytes": None,
        "allocated_bytes": 0,
        "mode": None,
        "uid": None,
        "gid": None,
        "is_swap": False,
        "header_ok": False,
        "holes": False,
        "nocow": False,
        "active": False,
        "active_size_bytes": None,
        "used_bytes": 0,
        "priority": None,
    }
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        st.update(
            exists=True,
            is_file=stat.S_ISREG(info.st_mode),
            mode=stat.S_IMODE(info.st_mode),
            uid=info.st_uid,
            gid=info.st_gid,
        )
        if st["is_file"]:
            st.update(
                size_bytes=info.st_size,
                allocated_bytes=info.st_blocks * 512,
                holes=info.st_blocks * 512 < info.st_size,
            )
            with open(path, "rb") as handle:
                st["is_swap"], last_page = __utils__["serverfix_swapdisk.header"](handle, page)
            st["header_ok"] = st["is_swap"] and last_page == info.st_size // page - 1
            st["nocow"] = __utils__["serverfix_swapdisk.nocow"](path)
    mount = (
        __utils__["serverfix_fstab.mount_of"](
            os.path.realpath(os.path.dirname(path)), _read(MOUNTINFO)
        )
        or {}
    )
    st["fs_type"] = mount.get("fs_type")
    st["mount_point"] = mount.get("mount_point")
    st["read_only"] = "ro" in mount.get("options", [])
    for entry in active_swaps():
        if entry["filename"] in (path, real) and not entry["deleted"]:
            st.update(
                active=True,
                active_size_bytes=entry["size_bytes"],
                used_bytes=entry["used_bytes"],
                priority=entry["priority"],
            )
    st["fstab_lines"] = _lines_for(_fstab(fstab), path)
    return st


def _lines_for(text, path):
    shown = __utils__["serverfix_fstab.shown"]
    return [shown(line) for _, line, _ in __utils__["serverfix_fstab.entries"](text, path)]


def _free_bytes(directory):
    vfs = os.statvfs(directory)
    return vfs.f_bavail * vfs.f_frsize  # what non-root may use: the root reserve stays untouched


def _mem_available():
    return __utils__["serverfix_files.meminfo"](PROC_MEMINFO).get("MemAvailable", 0)


def _size_bytes(size):
    try:
        return __utils__["serverfix_size.parse_size"](size)
    except (ValueError, TypeError):
        raise SaltInvocationError(f"size {size!r} is not a size such as 2G or 512M") from None


def plan(path, size, fstab=FSTAB, reserve=None):
    """
    The changes :func:`ensure` would make for an active swap file of ``size`` at ``path``.
    Read-only; the state's test mode reports exactly this.

    Returns ``{"action", "reason", "changes", "status"}``. Raises ``SaltInvocationError`` for a
    ``size`` that is no size or too small, and one ``CommandExecutionError`` (every reason in
    ``info["errors"]``) when :func:`ensure` would refuse: the directory, the file system, a file
    there that is not swap, free disk space, memory for a resize.

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.plan /swapfile 2G
    """
    path = os.path.abspath(path)
    wanted = _size_bytes(size)
    if wanted < MIN_SIZE:
        raise SaltInvocationError(
            f"size {size!r} is too small for a swap file; use at least 1M (e.g. 2G)"
        )
    parent = os.path.dirname(path)
    raise_problems = __utils__["serverfix_errors.raise_problems"]
    if not os.path.isdir(parent):
        raise_problems(
            [
                f"the directory {parent} of {path} does not exist; create it or choose "
                "another path (e.g. /swapfile)"
            ]
        )
    st = status(path, fstab)
    if st["fs_type"] in NO_SWAP_FS:
        raise_problems(
            [
                f"{path} is on {st['fs_type']} ({st['mount_point']}), where the kernel "
                "cannot swap to a file; choose a path on ext4, xfs or btrfs (e.g. /swapfile)"
            ]
        )
    if st["read_only"] and not (st["active"] and st["size_bytes"] == wanted):
        raise_problems([f"{st['mount_point']} is mounted read-only; {path} cannot be written"])
    # reserve: the free space kept after writing the file (None: the swapplan default, 256M)
    kept = {} if reserve is None else {"reserve": _size_bytes(reserve)}
    active = [entry["filename"] for entry in active_swaps()]
    reclaim, problems = __utils__["serverfix_swapdisk.leftover"](path, active)
    result = __utils__["serverfix_swapplan.decide"](
        st, wanted, _free_bytes(parent), _mem_available(), reclaim=reclaim or 0, **kept
    )
    problems += result.pop("errors")
    if reclaim is not None:  # removed by the run, whatever else it does
        old = f"{_tmp_of(path)} ({_human_mib(reclaim)})"
        result["changes"]["leftover"] = {"old": old, "new": None}
    # everything fstab needs is known before the swap file is touched: the preview is the run
    new, result["fstab_reason"] = __utils__["serverfix_fstab.review"](_fstab(fstab), path)
    if new is not None:
        problems += __utils__["serverfix_swapdisk.fstab_writable"](fstab)
        result["changes"]["fstab"] = {"old": st["fstab_lines"], "new": _lines_for(new, path)}
    raise_problems(problems)
    result["status"] = st
    return result


def preflight(path, size, fstab=FSTAB):
    """
    Everything that would stop :func:`ensure` for ``path``/``size``, before anything changes:
    :func:`plan`'s reasons, whether swap is permitted at all and whether ``mkswap`` is there.
    Read-only.

    Returns True when nothing stands in the way; else raises one ``CommandExecutionError``
    with every problem in ``info["errors"]``, each naming the path or the size and the fix.

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.preflight /swapfile 2G
    """
    try:
        action = plan(path, size, fstab)["action"]
    except (CommandExecutionError, SaltInvocationError) as exc:
        __utils__["serverfix_errors.raise_problems"](__utils__["serverfix_errors.problems"](exc))
    if action == "none":  # chmod and fstab need no swap permission
        return True
    problems = []
    ok, reason = swap_permitted()
    if not ok:
        problems.append(f"{os.path.abspath(path)}: {reason}")
    elif not _which("mkswap"):
        problems.append(
            "mkswap not found: install util-linux (Debian/Ubuntu: apt-get install util-linux)"
        )
    __utils__["serverfix_errors.raise_problems"](problems)
    return True


# ---------------------------------------------------------------- changing the system


def _which(name):
    return __salt__["cmd.which"](name)


def _run(argv):
    ret = __salt__["cmd.run_all"](
        argv, python_shell=False, env={"LC_ALL": "C"}, ignore_retcode=True, output_loglevel="debug"
    )
    return ret["retcode"], (ret.get("stderr") or ret.get("stdout") or "").strip()


def _tmp_of(path):
    return __utils__["serverfix_swapdisk.tmp_of"](path)


def _unlink(path):
    __utils__["serverfix_swapdisk.unlink_quietly"](path)


def _build(path, size, method, fs_type):
    return __utils__["serverfix_swapdisk.build"](path, size, method, fs_type, _run, _which)


def _not_permitted(path):
    ok, reason = swap_permitted()
    if not ok:
        return CommandExecutionError(f"swapon {path}: {reason}")
    # swap calls are allowed, so EPERM from swapon is the kernel's cap on swap areas (about 30)
    return CommandExecutionError(
        f"swapon {path}: refused (EPERM) with {len(active_swaps())} swap areas active: the "
        "kernel's limit of swap areas is reached. Swap off ones no longer needed (swapon --show)"
    )


def _swapoff(path):
    code = _swap_call("swapoff", path)
    if code == errno.EPERM:
        raise _not_permitted(path)
    if code == errno.ENOMEM:
        raise CommandExecutionError(
            f"swapoff {path}: not enough memory to take back what is in swap (ENOMEM); "
            "it stays active. Retry when less is swapped out."
        )
    if code:
        raise CommandExecutionError(f"swapoff {path} failed: {os.strerror(code)}")


def _install(path, size, method, fs_type):
    """Build at a temporary name, move into place, swapon; zeros when the kernel rejects it."""
    tmp = _tmp_of(path)
    _unlink(tmp)  # left by an interrupted run (plan checked it is ours and not active)
    used = _build(tmp, size, method, fs_type)
    os.replace(tmp, path)
    code = _swap_call("swapon", path)
    if code == errno.EINVAL and used == "fallocate" and method == "auto":
        # unwritten extents the kernel will not swap to (XFS before 4.18, some ext4): zeros work
        log.info("swapfile: swapon %s rejected the fallocated file; rewriting it with zeros", path)
        os.unlink(path)
        used = _build(tmp, size, "zero", fs_type)
        os.replace(tmp, path)
        code = _swap_call("swapon", path)
    if code:
        os.unlink(path)  # a swap file that cannot be used is not left behind
        if code == errno.EPERM:
            raise _not_permitted(path)
        raise CommandExecutionError(
            f"swapon {path} failed: {os.strerror(code)} (file system {fs_type}); "
            "the file was removed again. Choose a path on ext4 or xfs."
        )
    return used


def _write_fstab(fstab, text, done="", backup_dir=BACKUP_DIR):
    """Replace ``fstab`` by ``text`` (a backup below ``backup_dir`` first); ``done`` says what
    already changed. Returns the backup's path (``None``: nothing to back up or write)."""
    if text is None:
        return None
    data = __utils__["serverfix_fstab.encode"](text)
    made = None
    try:
        if os.path.exists(fstab):
            made = __utils__["serverfix_files.backup"](fstab, backup_dir=backup_dir)
            __utils__["serverfix_files.atomic_write"](fstab, data)
        else:
            __utils__["serverfix_files.atomic_write"](fstab, data, mode=0o644, uid=0, gid=0)
    except OSError as exc:
        raise CommandExecutionError(
            f"{done}cannot write {fstab}: {exc.strerror}; fix that and run again"
        ) from None
    return made


def ensure(path, size, fstab=FSTAB, method="auto", reserve=None, backup_dir=BACKUP_DIR):
    """
    Make ``path`` an active swap file of exactly ``size``, 0600 root, with exactly one line in
    ``fstab``. Refuses (raises, changing nothing) when :func:`plan` raises. A different size
    is swapped off (only when memory can take what is in it), removed and written anew.

    method
        ``auto`` (``fallocate``, zeros where the file system or the kernel needs them),
        ``fallocate`` or ``zero``.
    backup_dir
        Where the backup of ``fstab`` goes before it is edited: its path mirrored below it
        (default ``/var/backups/serverfix``, created 0700); ``''``: next to it.

    Returns ``{"changes", "comment", "method", "backup"}``; ``changes`` is what :func:`plan`
    predicted, ``backup`` the fstab backup's path (``None`` when fstab was not edited).

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.ensure /swapfile 2G
    """
    if method not in ("auto", "fallocate", "zero"):
        raise SaltInvocationError(f"method {method!r}: use auto, fallocate or zero")
    __utils__["serverfix_files.check_backup_dir"](backup_dir)
    path = os.path.abspath(path)
    try:
        result = plan(path, size, fstab, reserve)
    except CommandExecutionError as exc:
        _refuse(exc)
    st, action, wanted = result["status"], result["action"], _size_bytes(size)
    if action != "none":
        ok, reason = swap_permitted()
        if not ok:
            raise CommandExecutionError(f"{path}: {reason}. Nothing was changed.")
    used = None
    changes = result["changes"]
    if "leftover" in changes:
        _unlink(_tmp_of(path))
    if "mode" in changes:
        os.chmod(path, 0o600)
        os.chown(path, 0, 0)
    if action == "activate":
        code = _swap_call("swapon", path)
        if code == errno.EINVAL and method == "auto":
            # the kernel saw something the header and block count did not show: write it anew
            log.info("swapfile: swapon %s: EINVAL; writing it anew", path)
            action, result["reason"] = "rebuild", "swapon rejected it (EINVAL)"
            changes["file"] = {
                "old": f"{_human(wanted)} ({result['reason']})",
                "new": _human(wanted),
            }
        elif code == errno.EPERM:
            raise _not_permitted(path)
        elif code:
            raise CommandExecutionError(f"swapon {path} failed: {os.strerror(code)}")
    if action == "resize":
        _swapoff(path)
    if action in ("resize", "rebuild"):
        os.unlink(path)
    if action in ("create", "resize", "rebuild"):
        used = _install(path, wanted, method, st["fs_type"])
    done = f"{path} is an active swap file, but " if action != "none" else ""
    made = None
    if "fstab" in changes:
        with_swap = __utils__["serverfix_fstab.with_swap"](_fstab(fstab), path)
        made = _write_fstab(fstab, with_swap, done, backup_dir)
    comment = {
        "none": f"{path} is an active {_human(wanted)} swap file",
        "create": f"created {path} ({_human(wanted)}, {used}) and swapped it on",
        "resize": f"resized {path}: {result['reason']} ({used}); "
        "swapped off, rewritten, swapped on",
        "rebuild": f"rewrote {path} ({used}): {result['reason']}; swapped it on",
        "activate": f"swapped {path} on",
    }[action]
    return {
        "changes": changes,
        "comment": comment,
        "method": used,
        "fstab_reason": result["fstab_reason"],
        "backup": made,
    }


def remove(path, fstab=FSTAB, backup_dir=BACKUP_DIR):
    """
    Swap ``path`` off (only when memory can take what is in it), remove its fstab lines and
    the file. A file there without a swap signature is left alone (it may hold data). The
    backup of ``fstab`` goes below ``backup_dir``, as for :func:`ensure`.

    Returns the changes made; raises ``CommandExecutionError`` (changing nothing) when
    :func:`plan_remove` does.

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.remove /swapfile
    """
    __utils__["serverfix_files.check_backup_dir"](backup_dir)
    try:
        changes = plan_remove(path, fstab)
    except CommandExecutionError as exc:
        _refuse(exc)
    path = os.path.abspath(path)
    if "active" in changes:
        _swapoff(path)
    if "fstab" in changes:
        done = f"{path} is swapped off, but " if "active" in changes else ""
        without = __utils__["serverfix_fstab.without"](_fstab(fstab), path)
        _write_fstab(fstab, without, done, backup_dir)
    if "file" in changes:
        os.unlink(path)
    return changes


def plan_remove(path, fstab=FSTAB):
    """
    What :func:`remove` would change for ``path``: ``{active, fstab, file}`` entries present
    only where something changes. Read-only. Raises one ``CommandExecutionError`` (every reason
    in ``info["errors"]``) when it would refuse: a file that is not swap, too little memory.

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.plan_remove /swapfile
    """
    st = status(os.path.abspath(path), fstab)
    changes, errors = __utils__["serverfix_swapplan.decide_remove"](st, _mem_available())
    if "fstab" in changes:
        errors += __utils__["serverfix_swapdisk.fstab_writable"](fstab)
    __utils__["serverfix_errors.raise_problems"](errors)
    return changes


def _refuse(exc):
    """Raise ``exc``'s problems again, saying that nothing was changed."""
    problems = __utils__["serverfix_errors.problems"](exc)
    __utils__["serverfix_errors.raise_problems"](problems, prefix="Nothing was changed: ")
