"""
File helpers shared by the serverfix modules: atomic writes that keep mode and owner,
timestamped backups, the end of a log file and /proc/meminfo. Standard library only (runs in
the minion's Python).

Reached from execution and state modules as ``__utils__["serverfix_files.atomic_write"]``.
"""

import glob
import os
import tempfile
import time


def atomic_write(path, data, mode=None, uid=None, gid=None):
    """
    Replace ``path`` with ``data`` (bytes) atomically: a temp file in the same directory,
    fsync, rename. Mode and owner are taken from the existing file unless given. A symlink
    is resolved first so its target is written, not replaced by a regular file.
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
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        # mode/owner first, so the content is never readable by others, not even for a moment
        os.fchmod(fd, mode)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
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


def backup(path, keep=5, tag="serverfix"):
    """
    Copy ``path`` to ``<path>.<tag>-<UTC timestamp>.bak`` with mode 0600 and the file's owner,
    then delete all but the newest ``keep`` such backups. Returns the backup's path.
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
    atomic_write(name, data, mode=0o600, uid=st.st_uid, gid=st.st_gid)
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
