"""
File helpers shared by the serverfix modules: atomic writes that keep mode, owner, POSIX ACLs
and every other extended attribute, the ownership check for files written whole
(:func:`check_owned`, :func:`write_owned`), timestamped backups, the end of a log file and
/proc/meminfo. Standard library and salt only (runs in the minion's Python).

Reached from execution and state modules as ``__utils__["serverfix_files.atomic_write"]``.
"""

import errno
import glob
import os
import stat
import tempfile
import time

from salt.exceptions import CommandExecutionError

# directories that belong to packages or to the running system, never to an admin or the formula
VENDOR_DIRS = ("/usr/lib", "/lib", "/lib64", "/usr/share", "/run", "/proc", "/sys")


def _xattrs(path):
    """``{name: value}`` of every extended attribute of ``path`` (``{}`` where unsupported)."""
    try:
        names = os.listxattr(path)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.ENOENT):
            return {}
        raise
    found = {}
    for name in names:
        try:
            found[name] = os.getxattr(path, name)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed meanwhile
                raise
    return found


def _copy_xattrs(source, fd, target):
    """
    Give the open temp file ``fd`` exactly the extended attributes of ``source`` (ACLs are
    ``system.posix_acl_*`` attributes, labels ``security.*``). Raises ``CommandExecutionError``
    naming the attribute when one cannot be set: ``target`` is then left as it was.
    """
    try:
        wanted = _xattrs(source)
    except OSError as exc:
        raise CommandExecutionError(
            f"cannot read the extended attributes (ACLs, labels) of {source}: {exc.strerror}; "
            f"{target} was not changed"
        ) from None
    for name, value in wanted.items():
        try:
            os.setxattr(fd, name, value)
        except OSError as exc:
            raise CommandExecutionError(
                f"cannot keep the extended attribute {name} of {source} on the new version of "
                f"{target} ({exc.strerror}): {target} was not changed. Remove that attribute "
                f"(setfattr -x {name} {target}) or edit the file by hand"
            ) from None
    try:
        extra = [name for name in os.listxattr(fd) if name not in wanted]
    except OSError:
        return
    for name in extra:  # e.g. an ACL inherited from the directory's default ACL
        try:
            os.removexattr(fd, name)
        except OSError:
            pass  # a label the kernel assigns to every new file: not ours to drop


def atomic_write(path, data, mode=None, uid=None, gid=None, xattrs_from=None):
    """
    Replace ``path`` with ``data`` (bytes) atomically: a temp file in the same directory,
    fsync, rename. Mode and owner are taken from the existing file unless given; its POSIX
    ACLs and other extended attributes (``xattrs_from`` when given, else the existing file's)
    are copied to the temp file before the rename. A symlink is resolved first so its target is
    written, not replaced by a regular file.

    Raises ``CommandExecutionError`` (``path`` untouched) when an attribute cannot be copied.
    Returns the path written.
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        st = os.stat(target)
        mode = st.st_mode & 0o7777 if mode is None else mode
        uid = st.st_uid if uid is None else uid
        gid = st.st_gid if gid is None else gid
    except FileNotFoundError:
        mode = 0o600 if mode is None else mode
    source = target if xattrs_from is None else os.path.realpath(xattrs_from)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        # owner, attributes, then mode (chown clears some attributes, setting an ACL sets the
        # group bits), all before the content, so it is never readable by others
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        _copy_xattrs(source, fd, target)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def _under(path, directories):
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in directories)


def check_owned(path, marker, vendor_dirs=()):
    """
    Refuse to let ``path`` be written whole unless it is absent or a regular file this formula
    wrote (its content starts with ``marker``, bytes or str). Refused, with a message naming
    the path and the fix: a symlink (its target is someone else's file, e.g. Debian's
    ``/etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf``), anything that is not a regular file,
    a file without the marker (an admin's or a package's), and a path in ``vendor_dirs`` or
    :data:`VENDOR_DIRS` (directly or through a symlinked directory). Read-only.

    Raises ``CommandExecutionError`` (every problem in ``info["errors"]``); returns ``True``.
    """
    marker = marker.encode() if isinstance(marker, str) else marker
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute)
    vendor = [os.path.abspath(d) for d in (*VENDOR_DIRS, *vendor_dirs)]
    vendor += [os.path.realpath(d) for d in vendor]
    fix = "set another file name (under /etc) for the formula's own file"
    problems = []
    if _under(directory, vendor) or _under(os.path.realpath(directory), vendor):
        problems.append(
            f"{absolute} is in {directory}, a directory of packages or of the running system, "
            f"not of the admin: {fix}"
        )
    try:
        st = os.lstat(absolute)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        problems.append(
            f"{absolute} is a symlink to {os.readlink(absolute)}: writing it would replace that "
            f"file whole, and this formula did not create it; {fix}"
        )
    elif st is not None and not stat.S_ISREG(st.st_mode):
        problems.append(f"{absolute} exists and is not a regular file: {fix}")
    elif st is not None:
        with open(absolute, "rb") as handle:
            head = handle.read(len(marker))
        if head != marker:
            problems.append(
                f"{absolute} exists and was not written by this formula (it does not start with "
                f"{marker.decode(errors='replace').splitlines()[0]!r}): it would be replaced "
                f"whole; move its settings elsewhere and remove it, or {fix}"
            )
    if problems:
        raise CommandExecutionError("\n".join(problems), info={"errors": problems})
    return True


def write_owned(path, data, marker, vendor_dirs=(), **kwargs):
    """
    :func:`atomic_write` of a file the formula writes whole, after :func:`check_owned` (which
    raises, nothing changed, when ``path`` is not the formula's). ``data`` must start with
    ``marker``. Returns the path written.
    """
    check_owned(path, marker, vendor_dirs)
    encoded = marker.encode() if isinstance(marker, str) else marker
    if not data.startswith(encoded):
        raise CommandExecutionError(f"{path}: the content to write lacks the marker header")
    return atomic_write(os.path.abspath(path), data, **kwargs)


def backup(path, keep=5, tag="serverfix"):
    """
    Copy ``path`` to ``<path>.<tag>-<UTC timestamp>.bak`` with mode 0600, the file's owner and
    its ACLs and other extended attributes, then delete all but the newest ``keep`` such
    backups. Returns the backup's path.
    """
    target = os.path.realpath(path)
    with open(target, "rb") as handle:
        data = handle.read()
    st = os.stat(target)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"{target}.{tag}-{stamp}.bak"
    counter = 1
    while os.path.exists(name):  # two changes in one second keep both
        name = f"{target}.{tag}-{stamp}-{counter}.bak"
        counter += 1
    atomic_write(name, data, mode=0o600, uid=st.st_uid, gid=st.st_gid, xattrs_from=target)
    prune_backups(target, keep, tag)
    return name


def list_backups(path, tag="serverfix"):
    """Backups of ``path`` made by :func:`backup`, oldest first."""
    target = os.path.realpath(path)
    found = glob.glob(glob.escape(target) + f".{tag}-*.bak")
    return sorted(found, key=lambda p: (os.stat(p).st_mtime, p))


def prune_backups(path, keep, tag="serverfix"):
    """Delete all but the newest ``keep`` backups of ``path``; returns the deleted paths."""
    old = list_backups(path, tag)[:-keep] if keep > 0 else list_backups(path, tag)
    for name in old:
        os.unlink(name)
    return old


def tail_lines(path, lines):
    """The last ``lines`` lines of ``path``, reading only its end (pm2 logs grow without bound);
    ``[]`` when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            chunk = max(4096, lines * 200)
            start = max(0, size - chunk)
            while True:
                handle.seek(start)
                data = handle.read(size - start)
                if start == 0 or data.count(b"\n") > lines:
                    break
                start = max(0, start - chunk)
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def meminfo(path="/proc/meminfo"):
    """``{field: bytes}`` from /proc/meminfo (``{}`` when it cannot be read)."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return {}
    info = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            info[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return info
