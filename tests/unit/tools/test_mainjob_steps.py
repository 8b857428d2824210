"""
tools/mainjob/steps.py, the parts of the reboot step (7) that read what the guest printed: the
formula's sysctl.d file and the boot's swap unit. The step itself runs on the replica
(tests/e2e/test_replica_salt_ssh.py).
"""

import subprocess

from tools.mainjob import steps


class FakeReplica:
    """``ssh(command)`` answers from a table of command prefixes (no guest)."""

    def __init__(self, answers):
        self.answers, self.commands = answers, []

    def ssh(self, command, timeout=300, check=True):
        del timeout, check
        self.commands.append(command)
        for prefix, stdout in self.answers.items():
            if command.startswith(prefix):
                return subprocess.CompletedProcess(command, 0, stdout, "")
        return subprocess.CompletedProcess(command, 1, "", "")


def test_persisted_sysctls_reads_sysctl_d_syntax():
    text = (
        "# serverfix\n; old comment\n\nvm.swappiness = 10\nvm.vfs_cache_pressure=50\n"
        "-vm.overcommit_memory = 1\nvm.lowmem_reserve_ratio = 256\t256   32 0\nnot a line\n"
    )
    assert steps.persisted_sysctls(text) == {
        "vm.swappiness": "10",
        "vm.vfs_cache_pressure": "50",
        "vm.overcommit_memory": "1",
        "vm.lowmem_reserve_ratio": "256 256 32 0",
    }


def test_sysctls_after_boot_pairs_each_persisted_key_with_the_running_value():
    replica = FakeReplica(
        {
            "cat ": "vm.swappiness = 10\nvm.vfs_cache_pressure = 50\nvm.overcommit_memory = 1\n",
            "sysctl -n ": "1\n60\n100\n",  # sorted keys: overcommit, swappiness, vfs
        }
    )
    assert steps.sysctls_after_boot(replica) == {
        "vm.overcommit_memory": ("1", "1"),
        "vm.swappiness": ("10", "60"),
        "vm.vfs_cache_pressure": ("50", "100"),
    }
    assert replica.commands[1] == (
        "sysctl -n vm.overcommit_memory vm.swappiness vm.vfs_cache_pressure"
    )


def test_sysctls_after_boot_without_the_file_is_empty():
    assert steps.sysctls_after_boot(FakeReplica({})) == {}


def test_swap_from_fstab_at_boot_needs_the_unit_active_and_its_swapon_line():
    verbose = (
        "swapon: /swapfile: found signature [pagesize=4096, signature=swap]\nswapon /swapfile\n"
    )
    assert steps.swap_from_fstab_at_boot(FakeReplica({"systemctl": "active\n" + verbose}))
    # active but nothing switched on at this boot (swapon --all skipped it: it was still on)
    assert not steps.swap_from_fstab_at_boot(FakeReplica({"systemctl": "active\n"}))
    assert not steps.swap_from_fstab_at_boot(FakeReplica({"systemctl": "failed\n" + verbose}))
    assert not steps.swap_from_fstab_at_boot(
        FakeReplica({"systemctl": "active\nswapon /swapfile2\n"})
    )
