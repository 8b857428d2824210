"""
scripts/replica/*.sh, the parts that only compute (no root, no replica): the memory size, the
nspawn binds for lxcfs, the guest's swap unit. Booting the replica: tests/e2e/test_replica_host.py.
"""

import subprocess
from pathlib import Path

import pytest

PARTS = Path(__file__).resolve().parents[3] / "scripts" / "replica"


def part(function, memory="4G", run="/run-dir"):
    """Run ``function`` from the sourced parts with REPLICA_MEMORY=``memory``."""
    script = (
        'set -euo pipefail; say() { echo "$*" >&2; }; die() { say "ERROR: $*"; exit 1; }; '
        f"RUN={run}; NAME=replica; MEMORY={memory}; "
        f". {PARTS}/cgroup.sh; . {PARTS}/lxcfs.sh; . {PARTS}/sysctl.sh; {function}"
    )
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=False, timeout=30
    )


@pytest.mark.parametrize(
    "memory, expected",
    [("4G", str(4 << 30)), ("512M", str(512 << 20)), ("8G", str(8 << 30)), ("off", "")],
)
def test_memory_bytes(memory, expected):
    proc = part("memory_bytes", memory)
    assert proc.returncode == 0 and proc.stdout.strip() == expected, proc


@pytest.mark.parametrize("memory", ["4 GB", "lots", "-1G", "0", "4GB"])
def test_memory_bytes_refuses_what_is_not_a_size(memory):
    proc = part("memory_bytes", f"'{memory}'")
    assert proc.returncode == 1 and f"REPLICA_MEMORY={memory} is not a size" in proc.stderr, proc


def test_lxcfs_binds_mount_point_first_then_proc_files_from_inside_the_guest():
    # nspawn mounts /proc binds inside the container: their source is the guest's path
    lines = part("lxcfs_binds").stdout.split()
    assert lines[0] == "--bind-ro=/run-dir/lxcfs:/var/lib/lxcfs"
    assert "--bind-ro=/var/lib/lxcfs/proc/meminfo:/proc/meminfo" in lines[1:]
    assert not any("swaps" in line for line in lines)  # /proc/swaps stays the kernel's
    assert part("lxcfs_binds", "off").stdout == ""


def test_guest_swap_unit_runs_swapon_all_where_the_fstab_generator_would():
    unit = part("guest_swap_unit").stdout
    assert "ExecStart=/sbin/swapon --all --verbose" in unit
    assert "Before=swap.target" in unit and "WantedBy=swap.target" in unit
    assert "After=local-fs.target" in unit and "DefaultDependencies=no" in unit
