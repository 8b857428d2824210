"""
How long the real thing takes: a 2G swap file on ext4 made with fallocate (the issue's goal: under
a second, swapon included) and, with SERVERFIX_MEASURE=1, with the zero-fill fallback too (it
writes 2 GiB, so it is not part of every run). Each figure covers swapfile.ensure from nothing to
an active swap (create, mkswap, swapon, fstab line); the file is swapped off and removed after.

    SERVERFIX_MEASURE=1 python -m pytest --run-destructive -s \
        tests/functional/modules/test_swapfile_timing.py
"""

import os
import time

import pytest

from tests.support.swap import active_swap

pytestmark = pytest.mark.destructive_test

SIZE = "2G"
NEEDED = (2 << 30) + (256 << 20)  # the file plus the module's disk reserve


def _measure(modules, directory, method):
    if os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize < NEEDED:
        pytest.skip(f"less than {NEEDED >> 20} MiB free in {directory}")
    path = os.path.join(directory, f"swap-2g-{method}")
    fstab = os.path.join(directory, "fstab")
    start = time.monotonic()
    done = modules.swapfile.ensure(path, SIZE, fstab=fstab, method=method)
    elapsed = time.monotonic() - start
    try:
        assert done["method"] == method and active_swap(path) is not None
    finally:
        modules.swapfile.remove(path, fstab=fstab)
    print(f"\nswapfile.ensure {SIZE} on ext4 with {method}: {elapsed:.2f} s")
    return elapsed


def test_2g_is_made_with_fallocate(modules, swap_dir):
    # the figure is printed (a benchmark, not an assertion: CI machines are busy); what is
    # asserted is what makes it fast: fallocate, not 2 GiB of zeros written
    _measure(modules, swap_dir, "fallocate")  # asserts fallocate was used and the swap is active


@pytest.mark.skipif(
    not os.environ.get("SERVERFIX_MEASURE"), reason="writes 2 GiB: set SERVERFIX_MEASURE=1"
)
def test_2g_with_zero_fill(modules, swap_dir):
    _measure(modules, swap_dir, "zero")
