"""
Helpers for the real-swap tests (Phase 4): swap is kernel-global, so every test works under its own
directory on ext4 (the ``swap_dir`` fixture), cleans up whatever it swapped on or mounted there, and
restores the vm.* sysctls it touched (``sysctl_restore``).
"""

import os
import re
import shutil
import subprocess
from contextlib import contextmanager

import pytest

EXT4_CANDIDATES = ("/var/tmp", "/root", "/srv", "/")
SYSCTL_KEYS = ("vm.swappiness", "vm.vfs_cache_pressure", "vm.overcommit_memory")


def fs_type(path):
    """The file system type at ``path`` as util-linux's findmnt sees it (not the module)."""
    out = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "-T", path], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


def kernel_path(field):
    r"""A path as /proc/swaps and mountinfo print it (``\040`` for a space...) made a path again."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def swap_lines(prefix):
    """``/proc/swaps`` lines for files under ``prefix`` (compared as text: what the kernel says)."""
    with open("/proc/swaps", encoding="utf-8") as handle:
        return sorted(
            line.rstrip("\n") for line in handle if kernel_path(line.split()[0]).startswith(prefix)
        )


def swapoff_under(prefix):
    """Swap off every swap file under ``prefix`` (names with spaces included)."""
    for line in swap_lines(prefix):
        subprocess.run(["swapoff", kernel_path(line.split()[0])], check=False)


def active_swap(path):
    """``(size KiB, used KiB)`` of ``path`` in ``/proc/swaps``, or ``None``."""
    with open("/proc/swaps", encoding="utf-8") as handle:
        for line in list(handle)[1:]:
            fields = line.split()
            if kernel_path(fields[0]) == path:
                return int(fields[2]), int(fields[3])
    return None


def tree(root):
    """Every file under ``root`` with size and mode: a fingerprint for "nothing was touched"."""
    found = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (st.st_size, st.st_mode)
    return found


def snapshot(root, *files):
    """Swaps under ``root``, the files below it, and the bytes of ``files`` (fstab...)."""
    contents = {}
    for name in files:
        try:
            with open(name, "rb") as handle:
                contents[str(name)] = handle.read()
        except FileNotFoundError:
            contents[str(name)] = None
    return {"swaps": swap_lines(str(root)), "tree": tree(root), "files": contents}


def cleanup(root):
    """Swap off and unmount whatever is under ``root``, then remove it."""
    swapoff_under(root)
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        points = [kernel_path(line.split()[4]) for line in handle]
    points = [point for point in points if point.startswith(root)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", point], check=False)
    shutil.rmtree(root, ignore_errors=True)


@contextmanager
def loop_fs(root, fstype, size_mb):
    """A small ``fstype`` file system, loop-mounted under ``root`` and unmounted afterwards."""
    image = os.path.join(root, f"{fstype}.img")
    point = os.path.join(root, f"mnt-{fstype}")
    os.makedirs(point)
    with open(image, "wb") as handle:
        handle.truncate(size_mb << 20)
    mkfs = {
        "ext4": ["mkfs.ext4", "-q", "-F"],
        "ext2": ["mkfs.ext2", "-q", "-F"],
        "xfs": ["mkfs.xfs", "-q", "-f"],
        "btrfs": ["mkfs.btrfs", "-q", "-f"],
    }[fstype]
    if not shutil.which(mkfs[0]):
        pytest.fail(
            f"{mkfs[0]} missing: scripts/test.sh installs btrfs-progs, xfsprogs and e2fsprogs"
        )
    subprocess.run(mkfs + [image], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", image, point], check=True)
    try:
        yield point
    finally:
        swapoff_under(point)
        subprocess.run(["umount", point], check=False)  # the loop device goes with it (autoclear)
        os.unlink(image)


def read_sysctl(key):
    with open("/proc/sys/" + key.replace(".", "/"), encoding="ascii") as handle:
        return handle.read().strip()


def write_sysctl(key, value):
    with open("/proc/sys/" + key.replace(".", "/"), "w", encoding="ascii") as handle:
        handle.write(str(value))
