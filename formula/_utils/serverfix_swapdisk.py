"""
The swap file on disk: its header, the btrfs no-copy-on-write flag, writing a new one
(``fallocate`` or zeros, then ``mkswap``) and the temporary file a killed run left. Used by the
``swapfile`` module as ``__utils__["serverfix_swapdisk.build"]`` and friends; the commands run
through the ``run``/``which`` functions it passes (Salt's ``cmd.run_all``/``cmd.which``).
Standard library and salt only.
"""

import errno
import fcntl
import logging
import os
import stat
import struct

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

ZERO_CHUNK = 1 << 20
SIGNATURE = b"SWAPSPACE2"
NEW_SUFFIX = ".serverfix-new"
# linux/fs.h: chattr +C must be set while the btrfs file is still empty
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_NOCOW_FL = 0x00800000


def header(handle, page):
    """``(is_swap, last_page)`` from the first page of a file."""
    data = handle.read(page)
    if len(data) < page or data[page - 10 : page] != SIGNATURE:
        return False, None
    return True, struct.unpack_from("<I", data, 1028)[0]  # after 1024 boot bytes and the version


def nocow(path):
    """Whether the file at ``path`` has the no-copy-on-write flag (``chattr +C``)."""
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


def new_file(path):
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


def set_nocow(fd):
    """Set the no-copy-on-write flag on the open, still empty file ``fd``."""
    flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
    fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_NOCOW_FL))


def zero_fill(fd, size):
    """Write ``size`` zero bytes to ``fd`` and fsync it."""
    chunk = bytes(ZERO_CHUNK)
    written = 0
    while written < size:
        written += os.write(fd, chunk[: min(ZERO_CHUNK, size - written)])
    os.fsync(fd)


def build(path, size, method, fs_type, run, which):
    """
    Write a new swap area of ``size`` bytes at ``path`` (must not exist), using ``fallocate``
    (``method='fallocate'``) or zeros (``'zero'``); ``'auto'`` falls back to zeros when the file
    system cannot fallocate. Returns the method used. The file is removed again on any failure.
    """
    fd = new_file(path)
    try:
        try:
            # swapon rejects copy-on-write files on btrfs; the flag only sticks while empty
            if fs_type == "btrfs":
                set_nocow(fd)
            used = method
            if method in ("auto", "fallocate"):
                rc, out = (
                    run(["fallocate", "-l", str(size), path])
                    if which("fallocate")
                    else (127, "not found")
                )
                if rc == 0:
                    used = "fallocate"
                elif method == "fallocate":
                    raise CommandExecutionError(f"fallocate {path} failed: {out}")
                else:
                    log.info("swapfile: fallocate %s failed (%s); writing zeros instead", path, out)
                    os.ftruncate(fd, 0)
                    used = "zero"
            if used == "zero":
                zero_fill(fd, size)
        finally:
            os.close(fd)
        rc, out = run(["mkswap", path])
        if rc != 0:
            raise CommandExecutionError(f"mkswap {path} failed: {out}")
    except OSError as exc:
        unlink_quietly(path)
        if exc.errno == errno.ENOSPC:
            raise CommandExecutionError(
                f"the disk filled up while writing {path}; "
                "it was removed again. Free some space or choose a smaller size."
            ) from None
        raise CommandExecutionError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        unlink_quietly(path)
        raise
    return used


def unlink_quietly(path):
    """Remove ``path``; one that is already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def tmp_of(path):
    """The temporary name a new swap file for ``path`` is written under."""
    return os.path.join(os.path.dirname(path), "." + os.path.basename(path) + NEW_SUFFIX)


def leftover(path, active):
    """
    The temporary file a killed run left beside ``path`` (``active``: the swap areas in use):
    ``(bytes it frees or None when there is none, problems)``. Ours means a regular file of
    root's with one link that is not swapped on; anything else there is not touched.
    """
    tmp = tmp_of(path)
    try:
        info = os.lstat(tmp)
    except FileNotFoundError:
        return None, []
    if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_nlink != 1:
        return None, [
            f"{tmp} exists and is not a temporary file this module left behind "
            "(not a regular file of root's with one link); move it away"
        ]
    if tmp in active:
        return None, [f"{tmp} is swapped on: swapoff it first, then remove it"]
    return info.st_blocks * 512, []


def fstab_writable(fstab):
    """Why ``fstab`` could not be replaced (atomic write in its directory), as a list."""
    directory = os.path.dirname(os.path.realpath(fstab))
    if not os.path.isdir(directory):
        return [f"the directory {directory} of {fstab} does not exist; create it or pass fstab="]
    if os.path.exists(fstab) and not os.path.isfile(fstab):
        return [f"{fstab} is not a regular file; it cannot be rewritten"]
    if not os.access(directory, os.W_OK):
        return [f"{fstab} cannot be written: {directory} is read-only or not writable"]
    return []
