"""
swapfile: a swap file that is really there, really active and in fstab exactly once (Phase 4).

What Salt's ``mount.swap`` does not do: it creates the file (``fallocate``, or zeros where the
file system needs them), reads the truth from ``/proc/swaps`` and the swap header (never from
``file`` output), refuses before writing when the disk or the memory cannot take the change,
and says so when the kernel does not permit swap at all (a container).

swapon/swapoff are the system calls themselves (through ``ctypes``), so every failure carries
the kernel's errno instead of a localised message to parse; ``mkswap`` and ``fallocate`` are
util-linux's. Standard library and salt only.
"""

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import stat
import struct

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "swapfile"

FSTAB = "/etc/fstab"
PROC_SWAPS = "/proc/swaps"
PROC_MEMINFO = "/proc/meminfo"
MOUNTINFO = "/proc/self/mountinfo"
PILLAR_FILE = "serverfix:swap:file"
PILLAR_SIZE = "serverfix:swap:size"

MIN_SIZE = 1 << 20
# free space left on the file system after the swap file is written (logs, package updates...)
DISK_RESERVE = 256 << 20
# RAM that must stay available after swapoff has pulled the swapped-out pages back in
MEMORY_HEADROOM = 128 << 20
ZERO_CHUNK = 1 << 20
SIGNATURE = b"SWAPSPACE2"
NEW_SUFFIX = ".serverfix-new"

# file systems the kernel cannot swap to (swapon says EINVAL, or they vanish/lie about blocks)
NO_SWAP_FS = {"tmpfs", "ramfs", "overlay", "aufs", "zfs", "squashfs", "erofs", "iso9660", "fuse",
              "fuseblk", "devtmpfs", "proc", "sysfs", "9p", "virtiofs", "nfs", "nfs4", "cifs", "smb3"}

# linux/fs.h: chattr +C must be set while the btrfs file is still empty
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_NOCOW_FL = 0x00800000

_FSTAB_ESCAPES = {" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134"}


def __virtual__():
    if not os.path.exists(PROC_SWAPS):
        return (False, "swapfile: /proc/swaps is missing (not Linux, or /proc not mounted)")
    return __virtualname__


# ---------------------------------------------------------------- pure parsing (unit-tested)

def _unescape_octal(field):
    r"""Undo the ``\040``-style escapes the kernel and fstab use for spaces in paths."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _escape_fstab(path):
    """``path`` written the way fstab expects (spaces as ``\\040``)."""
    return "".join(_FSTAB_ESCAPES.get(char, char) for char in path)


def _parse_proc_swaps(text):
    """
    ``/proc/swaps`` as a list of ``{filename, type, size_bytes, used_bytes, priority, deleted}``.
    The kernel reports sizes in KiB, and the size without the header page.
    """
    entries = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        name = _unescape_octal(" ".join(fields[:-4]))
        deleted = name.endswith(" (deleted)")
        if deleted:
            name = name[: -len(" (deleted)")]
        entries.append({
            "filename": name,
            "type": fields[-4],
            "size_bytes": int(fields[-3]) * 1024,
            "used_bytes": int(fields[-2]) * 1024,
            "priority": int(fields[-1]),
            "deleted": deleted,
        })
    return entries


def _mount_of(path, mountinfo_text):
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
        point = _unescape_octal(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best["mount_point"])):
            best = {"mount_point": point, "fs_type": tail[0], "source": _unescape_octal(tail[1]),
                    "options": fields[5].split(",")}
    return best


def _same_path(spec, path):
    return spec == path or (spec.startswith("/") and os.path.realpath(spec) == os.path.realpath(path))


def _fstab_entries(text, path):
    """The lines of fstab ``text`` whose device field is ``path``: list of ``(index, line, fields)``."""
    found = []
    for index, line in enumerate(text.splitlines()):
        fields = line.split()
        if fields and not fields[0].startswith("#") and _same_path(_unescape_octal(fields[0]), path):
            found.append((index, line, fields))
    return found


def _fstab_line(path):
    """The one fstab line the formula writes for swap file ``path``."""
    return f"{_escape_fstab(path)} none swap sw 0 0"


def _fstab_with_swap(text, path):
    """
    ``text`` with exactly one swap line for ``path``: kept as is when there is exactly one
    (the admin's options such as ``pri=`` stay), else the first becomes the formula's line and
    the others go. Returns the new text, or ``None`` when nothing needs to change.
    """
    entries = _fstab_entries(text, path)
    if len(entries) == 1 and len(entries[0][2]) >= 3 and entries[0][2][2] == "swap":
        return None
    lines = text.splitlines()
    if not entries:
        return text + ("" if not text or text.endswith("\n") else "\n") + _fstab_line(path) + "\n"
    drop = {index for index, _, _ in entries[1:]}
    lines[entries[0][0]] = _fstab_line(path)
    return "\n".join(line for i, line in enumerate(lines) if i not in drop) + "\n"


def _fstab_without(text, path):
    """``text`` with every line for ``path`` removed, or ``None`` when there is none."""
    entries = _fstab_entries(text, path)
    if not entries:
        return None
    drop = {index for index, _, _ in entries}
    kept = [line for i, line in enumerate(text.splitlines()) if i not in drop]
    return "\n".join(kept) + ("\n" if kept else "")


def _human(size):
    """``2147483648`` -> ``'2G'`` (exact units only, else bytes)."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size} bytes"


def _decide(st, wanted, free_bytes, mem_available, reserve=DISK_RESERVE):
    """
    What it takes to get from ``st`` (see :func:`status`) to an active swap file of ``wanted``
    bytes: ``{"action", "changes", "errors", "reason"}``. Pure: the test-mode prediction and
    the real run both come from here.

    action: ``none``, ``create``, ``resize`` (swapoff first), ``rebuild`` (inactive file that is
    the wrong size, has holes or is copy-on-write), ``activate``. fstab and mode are separate keys
    of ``changes`` (``fstab`` is filled in by :func:`plan`).
    """
    path = st["path"]
    result = {"action": "none", "changes": {}, "errors": [], "reason": ""}
    errors = result["errors"]
    if st["exists"] and not st["is_file"]:
        errors.append(f"{PILLAR_FILE}: {path} exists and is not a regular file; choose another path")
        return result
    if st["exists"] and not st["is_swap"] and not st["active"]:
        errors.append(f"{PILLAR_FILE}: {path} exists and is not a swap area (no {SIGNATURE.decode()} "
                      "signature): it may hold data, so it is left alone; move it away or choose another path")
        return result
    if not st["exists"]:
        result["action"], result["reason"] = "create", "no such file"
    elif st["size_bytes"] != wanted:
        result["action"] = "resize" if st["active"] else "rebuild"
        result["reason"] = f"size {_human(st['size_bytes'])} -> {_human(wanted)}"
    elif not st["active"]:
        problems = []
        if st["holes"]:
            problems.append("it has holes (swapon rejects those)")
        if st["fs_type"] == "btrfs" and not st["nocow"]:
            problems.append("it is copy-on-write on btrfs (swapon rejects those)")
        if not st["header_ok"]:
            problems.append("its swap header does not match its size")
        if problems:
            result["action"], result["reason"] = "rebuild", "; ".join(problems)
        else:
            result["action"], result["reason"] = "activate", "not active"

    changes = result["changes"]
    action = result["action"]
    if action in ("create", "resize", "rebuild"):
        old = _human(st["size_bytes"]) if st["exists"] else None
        if action == "rebuild" and st["size_bytes"] == wanted:
            old += f" ({result['reason']})"
        changes["file"] = {"old": old, "new": _human(wanted)}
        # the old file (inactive, or swapped off first) is removed before the new one is written
        have = free_bytes + (st["allocated_bytes"] if st["exists"] else 0)
        if have < wanted + reserve:
            errors.append(f"{PILLAR_SIZE}: not enough disk space for {_human(wanted)} at {path}: "
                          f"{_human_mib(have)} free on {st['mount_point']}, {_human_mib(wanted + reserve)} needed "
                          f"(the file plus {_human_mib(reserve)} kept free); free some space or choose a "
                          "smaller size or another file system")
    elif st["exists"] and (st["mode"] != 0o600 or st["uid"] != 0 or st["gid"] != 0):
        changes["mode"] = {"old": f"{st['mode']:04o} {st['uid']}:{st['gid']}", "new": "0600 0:0"}
    if action in ("create", "rebuild", "activate"):
        changes["active"] = {"old": False, "new": True}
    if action == "resize":
        need = st["used_bytes"] + MEMORY_HEADROOM
        if mem_available < need:
            errors.append(f"{PILLAR_SIZE}: cannot resize {path} now: {_human_mib(st['used_bytes'])} of it is in use "
                          f"and only {_human_mib(mem_available)} of memory is available "
                          f"({_human_mib(need)} needed to swap it off safely); retry when less is swapped out "
                          "(or stop a memory-heavy service first)")
    return result


def _human_mib(size):
    """Bytes as MiB with one decimal for messages about space (GiB from 10 GiB on)."""
    if size >= 10 << 30:
        return f"{size / (1 << 30):.1f} GiB"
    return f"{size / (1 << 20):.1f} MiB"


# ---------------------------------------------------------------- reading the system

def _read(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read()


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
        return False, ("swapon/swapoff are not permitted here (EPERM): this looks like a container without "
                       "CAP_SYS_ADMIN or with a seccomp filter (systemd-nspawn needs --system-call-filter=@swap). "
                       "Create the swap on the host, or set serverfix:swap:enabled to false")
    return True, ""


def active_swaps(proc_swaps=PROC_SWAPS):
    """
    Every active swap area, from ``/proc/swaps`` (the kernel's own list; tests point
    ``proc_swaps`` at a copy, since swap is kernel-global).

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.active_swaps
    """
    return _parse_proc_swaps(_read(proc_swaps))


def _header(handle, page):
    """``(is_swap, last_page)`` from the first page of a file."""
    data = handle.read(page)
    if len(data) < page or data[page - 10:page] != SIGNATURE:
        return False, None
    return True, struct.unpack_from("<I", data, 1028)[0]  # after 1024 boot bytes and the version


def _nocow(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0))
        return bool(struct.unpack("i", buf)[0] & FS_NOCOW_FL)
    except OSError:
        return False
    finally:
        os.close(fd)


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
    st = {"path": path, "exists": False, "is_file": False, "size_bytes": None, "allocated_bytes": 0,
          "mode": None, "uid": None, "gid": None, "is_swap": False, "header_ok": False, "holes": False,
          "nocow": False, "active": False, "active_size_bytes": None, "used_bytes": 0, "priority": None}
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        st.update(exists=True, is_file=stat.S_ISREG(info.st_mode), mode=stat.S_IMODE(info.st_mode),
                  uid=info.st_uid, gid=info.st_gid)
        if st["is_file"]:
            st.update(size_bytes=info.st_size, allocated_bytes=info.st_blocks * 512,
                      holes=info.st_blocks * 512 < info.st_size)
            with open(path, "rb") as handle:
                st["is_swap"], last_page = _header(handle, page)
            st["header_ok"] = st["is_swap"] and last_page == info.st_size // page - 1
            st["nocow"] = _nocow(path)
    mount = _mount_of(os.path.realpath(os.path.dirname(path)), _read(MOUNTINFO)) or {}
    st["fs_type"] = mount.get("fs_type")
    st["mount_point"] = mount.get("mount_point")
    st["read_only"] = "ro" in mount.get("options", [])
    for entry in active_swaps():
        if entry["filename"] in (path, real) and not entry["deleted"]:
            st.update(active=True, active_size_bytes=entry["size_bytes"], used_bytes=entry["used_bytes"],
                      priority=entry["priority"])
    try:
        st["fstab_lines"] = [line for _, line, _ in _fstab_entries(_read(fstab), path)]
    except FileNotFoundError:
        st["fstab_lines"] = []
    return st


def _free_bytes(directory):
    vfs = os.statvfs(directory)
    return vfs.f_bavail * vfs.f_frsize  # what non-root may use: the root reserve stays untouched


def _mem_available():
    return __utils__["serverfix_files.meminfo"](PROC_MEMINFO).get("MemAvailable", 0)  # pylint: disable=undefined-variable


def _size_bytes(size):
    try:
        return __utils__["serverfix_size.parse_size"](size)  # pylint: disable=undefined-variable
    except (ValueError, TypeError):
        raise CommandExecutionError(f"{PILLAR_SIZE}: {size!r} is not a size such as 2G or 512M") from None


def plan(path, size, fstab=FSTAB, reserve=DISK_RESERVE):
    """
    The changes :func:`ensure` would make for an active swap file of ``size`` at ``path``, and
    the reasons it would refuse. Read-only; the state's test mode reports exactly this.

    Returns ``{"action", "reason", "changes", "errors", "status"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.plan /swapfile 2G
    """
    path = os.path.abspath(path)
    errors = []
    try:
        wanted = _size_bytes(size)
    except CommandExecutionError as exc:
        return {"action": "none", "reason": "", "changes": {}, "errors": [str(exc)], "status": None}
    if wanted < MIN_SIZE:
        errors.append(f"{PILLAR_SIZE}: {size!r} is too small for a swap file; use at least 1M (e.g. 2G)")
        return {"action": "none", "reason": "", "changes": {}, "errors": errors, "status": None}
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        errors.append(f"{PILLAR_FILE}: the directory {parent} of {path} does not exist; create it or choose "
                      "another path (e.g. /swapfile)")
        return {"action": "none", "reason": "", "changes": {}, "errors": errors, "status": None}
    st = status(path, fstab)
    if st["fs_type"] in NO_SWAP_FS:
        errors.append(f"{PILLAR_FILE}: {path} is on {st['fs_type']} ({st['mount_point']}), where the kernel "
                      "cannot swap to a file; choose a path on ext4, xfs or btrfs (e.g. /swapfile)")
    elif st["read_only"] and not (st["active"] and st["size_bytes"] == wanted):
        errors.append(f"{PILLAR_FILE}: {st['mount_point']} is mounted read-only; {path} cannot be written")
    if errors:
        return {"action": "none", "reason": "", "changes": {}, "errors": errors, "status": st}
    result = _decide(st, wanted, _free_bytes(parent), _mem_available(), _size_bytes(reserve))
    if not result["errors"]:
        try:
            text = _read(fstab)
        except FileNotFoundError:
            text = ""
        if _fstab_with_swap(text, path) is not None:
            result["changes"]["fstab"] = {"old": st["fstab_lines"], "new": [_fstab_line(path)]}
    result["status"] = st
    return result


def preflight(path, size):
    """
    Everything that would stop :func:`ensure` for ``path``/``size``, before anything changes:
    the size, the directory, the file system, a file there that is not swap, free disk space
    (plus a reserve), memory for a resize, and whether swap is permitted at all. Read-only.

    Returns a list of messages (empty = fine), each naming the pillar key and the fix.

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.preflight /swapfile 2G
    """
    result = plan(path, size)
    errors = list(result["errors"])
    if result["action"] != "none":  # chmod and fstab need no swap permission
        ok, reason = swap_permitted()
        if not ok:
            errors.append(f"{PILLAR_FILE}: {reason}")
    if not errors and result["action"] != "none" and not _which("mkswap"):
        errors.append("mkswap not found: install util-linux (Debian/Ubuntu: apt-get install util-linux)")
    return errors


# ---------------------------------------------------------------- changing the system

def _which(name):
    return __salt__["cmd.which"](name)  # pylint: disable=undefined-variable


def _run(argv):
    ret = __salt__["cmd.run_all"](argv, python_shell=False, env={"LC_ALL": "C"},  # pylint: disable=undefined-variable
                                  ignore_retcode=True, output_loglevel="debug")
    return ret["retcode"], (ret.get("stderr") or ret.get("stdout") or "").strip()


def _new_file(path):
    """An empty file, 0600 root:root from the start (never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.fchown(fd, 0, 0)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    return fd


def _set_nocow(fd):
    flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
    fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_NOCOW_FL))


def _zero_fill(fd, size):
    chunk = bytes(ZERO_CHUNK)
    written = 0
    while written < size:
        written += os.write(fd, chunk[: min(ZERO_CHUNK, size - written)])
    os.fsync(fd)


def _build(path, size, method, fs_type):
    """
    Write a new swap area of ``size`` bytes at ``path`` (must not exist), using ``fallocate``
    (``method='fallocate'``) or zeros (``'zero'``); ``'auto'`` falls back to zeros when the file
    system cannot fallocate. Returns the method used. The file is removed again on any failure.
    """
    fd = _new_file(path)
    try:
        try:
            if fs_type == "btrfs":  # swapon rejects copy-on-write files; the flag only sticks while empty
                _set_nocow(fd)
            used = method
            if method in ("auto", "fallocate"):
                rc, out = _run(["fallocate", "-l", str(size), path]) if _which("fallocate") else (127, "not found")
                if rc == 0:
                    used = "fallocate"
                elif method == "fallocate":
                    raise CommandExecutionError(f"fallocate {path} failed: {out}")
                else:
                    log.info("swapfile: fallocate %s failed (%s); writing zeros instead", path, out)
                    os.ftruncate(fd, 0)
                    used = "zero"
            if used == "zero":
                _zero_fill(fd, size)
        finally:
            os.close(fd)
        rc, out = _run(["mkswap", path])
        if rc != 0:
            raise CommandExecutionError(f"mkswap {path} failed: {out}")
    except OSError as exc:
        _unlink_quietly(path)
        if exc.errno == errno.ENOSPC:
            raise CommandExecutionError(f"{PILLAR_SIZE}: the disk filled up while writing {path}; "
                                        "it was removed again. Free some space or choose a smaller size.") from None
        raise CommandExecutionError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        _unlink_quietly(path)
        raise
    return used


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _not_permitted(path):
    ok, reason = swap_permitted()
    return CommandExecutionError(f"swapon {path}: {reason}" if not ok else
                                 f"swapon {path}: not permitted (EPERM)")


def _swapoff(path):
    code = _swap_call("swapoff", path)
    if code == errno.EPERM:
        raise _not_permitted(path)
    if code == errno.ENOMEM:
        raise CommandExecutionError(f"swapoff {path}: not enough memory to take back what is in swap (ENOMEM); "
                                    "it stays active. Retry when less is swapped out.")
    if code:
        raise CommandExecutionError(f"swapoff {path} failed: {os.strerror(code)}")


def _install(path, size, method, fs_type):
    """Build at a temporary name, move into place, swapon; zeros when the kernel rejects the file."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + NEW_SUFFIX)
    _unlink_quietly(tmp)  # left over from an interrupted run; never active (it is only swapped on as `path`)
    used = _build(tmp, size, method, fs_type)
    os.replace(tmp, path)
    code = _swap_call("swapon", path)
    if code == errno.EINVAL and used == "fallocate" and method == "auto":
        # holes/unwritten extents the kernel will not swap to (XFS before 4.18, some ext4): zeros always work
        log.info("swapfile: swapon %s rejected the fallocated file; rewriting it with zeros", path)
        os.unlink(path)
        used = _build(tmp, size, "zero", fs_type)
        os.replace(tmp, path)
        code = _swap_call("swapon", path)
    if code:
        os.unlink(path)  # a swap file that cannot be used is not left behind
        if code == errno.EPERM:
            raise _not_permitted(path)
        raise CommandExecutionError(f"swapon {path} failed: {os.strerror(code)} (file system {fs_type}); "
                                    "the file was removed again. Choose a path on ext4 or xfs.")
    return used


def _write_fstab(fstab, text):
    if os.path.exists(fstab):
        __utils__["serverfix_files.backup"](fstab)  # pylint: disable=undefined-variable
        __utils__["serverfix_files.atomic_write"](fstab, text.encode())  # pylint: disable=undefined-variable
    else:
        __utils__["serverfix_files.atomic_write"](fstab, text.encode(), mode=0o644, uid=0, gid=0)  # pylint: disable=undefined-variable


def ensure(path, size, fstab=FSTAB, method="auto", reserve=DISK_RESERVE):
    """
    Make ``path`` an active swap file of exactly ``size``, 0600 root, with exactly one line in
    ``fstab``. Refuses (raises, changing nothing) on any :func:`plan` error. A different size
    is swapped off (only when memory can take what is in it), removed and written anew.

    method
        ``auto`` (``fallocate``, zeros where the file system or the kernel needs them),
        ``fallocate`` or ``zero``.

    Returns ``{"changes", "comment", "method"}``; ``changes`` is what :func:`plan` predicted.

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.ensure /swapfile 2G
    """
    if method not in ("auto", "fallocate", "zero"):
        raise CommandExecutionError(f"method {method!r}: use auto, fallocate or zero")
    path = os.path.abspath(path)
    result = plan(path, size, fstab, reserve)
    if result["errors"]:
        raise CommandExecutionError("Nothing was changed: " + " ".join(result["errors"]))
    st, action, wanted = result["status"], result["action"], _size_bytes(size)
    if action != "none":
        ok, reason = swap_permitted()
        if not ok:
            raise CommandExecutionError(f"{PILLAR_FILE}: {reason}. Nothing was changed.")
    used = None
    changes = result["changes"]
    if "mode" in changes:
        os.chmod(path, 0o600)
        os.chown(path, 0, 0)
    if action == "activate":
        code = _swap_call("swapon", path)
        if code == errno.EINVAL and method == "auto":
            # the kernel saw something the header and block count did not show: write it anew
            log.info("swapfile: swapon %s: EINVAL; writing it anew", path)
            action, result["reason"] = "rebuild", "swapon rejected it (EINVAL)"
            changes["file"] = {"old": f"{_human(wanted)} ({result['reason']})", "new": _human(wanted)}
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
    if "fstab" in changes:
        try:
            text = _read(fstab)
        except FileNotFoundError:
            text = ""
        _write_fstab(fstab, _fstab_with_swap(text, path))
    comment = {"none": f"{path} is an active {_human(wanted)} swap file",
               "create": f"created {path} ({_human(wanted)}, {used}) and swapped it on",
               "resize": f"resized {path}: {result['reason']} ({used}); swapped off, rewritten, swapped on",
               "rebuild": f"rewrote {path} ({used}): {result['reason']}; swapped it on",
               "activate": f"swapped {path} on"}[action]
    return {"changes": changes, "comment": comment, "method": used}


def remove(path, fstab=FSTAB):
    """
    Swap ``path`` off (only when memory can take what is in it), remove its fstab lines and
    the file. A file there without a swap signature is left alone (it may hold data).

    Returns the changes made.

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.remove /swapfile
    """
    changes = plan_remove(path, fstab)
    if changes.get("errors"):
        raise CommandExecutionError("Nothing was changed: " + " ".join(changes.pop("errors")))
    path = os.path.abspath(path)
    if "active" in changes:
        _swapoff(path)
    if "fstab" in changes:
        _write_fstab(fstab, _fstab_without(_read(fstab), path))
    if "file" in changes:
        os.unlink(path)
    return changes


def plan_remove(path, fstab=FSTAB):
    """
    What :func:`remove` would change for ``path``: ``{active, fstab, file}`` entries present
    only where something changes, plus ``errors`` when it would refuse. Read-only.

    CLI Example:

    .. code-block:: bash

        salt '*' swapfile.plan_remove /swapfile
    """
    path = os.path.abspath(path)
    st = status(path, fstab)
    changes, errors = {}, []
    if st["exists"] and not st["is_file"]:
        errors.append(f"{path} is not a regular file; it is left alone")
    elif st["exists"] and not st["is_swap"] and not st["active"]:
        errors.append(f"{path} is not a swap area (no {SIGNATURE.decode()} signature); it may hold data, "
                      "so it is left alone: remove it by hand if it is yours")
    if st["active"]:
        need = st["used_bytes"] + MEMORY_HEADROOM
        if _mem_available() < need:
            errors.append(f"cannot swap off {path}: {_human_mib(st['used_bytes'])} of it is in use and only "
                          f"{_human_mib(_mem_available())} of memory is available; retry when less is swapped out")
        changes["active"] = {"old": True, "new": False}
    if st["fstab_lines"]:
        changes["fstab"] = {"old": st["fstab_lines"], "new": []}
    if st["exists"]:
        changes["file"] = {"old": _human(st["size_bytes"]) if st["is_file"] else "present", "new": None}
    if errors:
        changes["errors"] = errors
    return changes
