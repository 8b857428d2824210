"""
File helpers shared by the serverfix modules: atomic writes that keep mode, owner, POSIX ACLs
and every other extended attribute, the ownership check for files written whole
(:func:`check_owned`, :func:`write_owned`), timestamped backups (below a backup directory,
the file's path mirrored, or next to the file), the end of a log file and
/proc/meminfo. Standard library and salt only (runs in the minion's Python).

Reached from execution and state modules as ``__utils__["serverfix_files.atomic_write"]``.
"""

import errno
import glob
import os
import stat
import tempfile
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

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


def backup_base(path, backup_dir=""):
    """
    What the backups of ``path`` are named after (``<this>.<tag>-<UTC time>.bak``): the file's
    real path mirrored below ``backup_dir`` (``/var/backups/serverfix`` +
    ``/var/www/app/.env`` -> ``/var/backups/serverfix/var/www/app/.env``), or, for
    ``backup_dir`` ``''``, the file's real path itself (the backups sit next to the file).
    Changes nothing.
    """
    target = os.path.realpath(path)
    if not backup_dir:
        return target
    return os.path.join(os.path.normpath(os.path.abspath(backup_dir)), target.lstrip("/"))


def backup_location(path, backup_dir=""):
    """The directory the backups of ``path`` go to, with a trailing ``/`` (for comments)."""
    return os.path.dirname(backup_base(path, backup_dir)) + "/"


def check_backup_dir(backup_dir):
    """Raise ``SaltInvocationError`` naming ``backup_dir`` unless it is an absolute path on one
    line or ``''``; returns it."""
    if backup_dir == "":
        return backup_dir
    if not isinstance(backup_dir, str) or not backup_dir.startswith("/") or "\n" in backup_dir:
        raise SaltInvocationError(
            f"backup_dir {backup_dir!r} is not an absolute path: give a directory such as "
            "/var/backups/serverfix, or '' to keep backups next to each file"
        )
    return backup_dir


def _make_dirs(directory):
    """Create ``directory`` and its missing parents, each 0700 (root-only: a backup of a
    secret keeps its owner, but no one else may even list the names)."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for name in reversed(missing):
        try:
            os.mkdir(name, 0o700)
        except FileExistsError:
            if not os.path.isdir(name):
                raise
            continue  # made meanwhile by a parallel run: not ours to chmod
        os.chmod(name, 0o700)  # the umask may have taken bits off: exactly 0700


def backup_dir_problems(backup_dir):
    """
    Why backups cannot be written below ``backup_dir`` (``[]``: they can, or ``backup_dir`` is
    ``''``): a part of the path that exists and is not a directory, or the deepest existing
    directory not writable (read-only file system, immutable, permissions). Read-only: a missing
    directory is created by :func:`backup` when first needed.
    """
    if not backup_dir:
        return []
    wanted = os.path.normpath(os.path.abspath(backup_dir))
    existing = wanted
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return [
            f"{existing} exists and is not a directory, so backups cannot go to {wanted}; "
            "remove it or choose another backup directory"
        ]
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "written" if existing == wanted else f"created (in {existing})"
        return [
            f"{wanted} cannot be {what}: not writable for uid {os.geteuid()} (read-only file "
            "system, immutable (lsattr), or permissions); choose a writable backup directory"
        ]
    return []


def backup(path, keep=5, tag="serverfix", backup_dir=""):
    """
    Copy ``path`` to ``<base>.<tag>-<UTC timestamp>.bak`` (``<base>``: :func:`backup_base`,
    the file's path mirrored below ``backup_dir``, or next to the file for ``''``) with mode
    0600, the file's owner and its ACLs and other extended attributes, then delete all but
    the newest ``keep`` such backups there (never the older ones next to the file). Missing
    directories below ``backup_dir`` are created 0700. Returns the backup's path.
    """
    target = os.path.realpath(path)
    with open(target, "rb") as handle:
        data = handle.read()
    st = os.stat(target)
    base = backup_base(target, backup_dir)
    if backup_dir:
        _make_dirs(os.path.dirname(base))
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"{base}.{tag}-{stamp}.bak"
    counter = 1
    while os.path.exists(name):  # two changes in one second keep both
        name = f"{base}.{tag}-{stamp}-{counter}.bak"
        counter += 1
    atomic_write(name, data, mode=0o600, uid=st.st_uid, gid=st.st_gid, xattrs_from=target)
    prune_backups(target, keep, tag, backup_dir)
    return name


def _backups_at(base, tag):
    return glob.glob(glob.escape(base) + f".{tag}-*.bak")


def list_backups(path, tag="serverfix", backup_dir="", beside=True):
    """
    Backups of ``path`` made by :func:`backup`, oldest first (by time): those below
    ``backup_dir`` and, with ``beside`` (or for ``backup_dir`` ``''``), those next to the file
    (where earlier versions put them).
    """
    target = os.path.realpath(path)
    found = set(_backups_at(backup_base(target, backup_dir), tag))
    if beside or not backup_dir:
        found.update(_backups_at(target, tag))
    return sorted(found, key=lambda p: (os.stat(p).st_mtime, p))


def prune_backups(path, keep, tag="serverfix", backup_dir=""):
    """Delete all but the newest ``keep`` backups of ``path`` below ``backup_dir`` (next to the
    file for ``''``); returns the deleted paths."""
    found = list_backups(path, tag, backup_dir, beside=False)
    old = found[:-keep] if keep > 0 else found
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
