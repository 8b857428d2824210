"""Argv sampling: every process command line seen in the guest and on this host during the runs."""

import os
import subprocess
import threading


class ArgvSampler:
    """Every distinct argv seen by ``ps`` in the guest (every 0.1 s) and in /proc on this host."""

    def __init__(self, replica):
        self.replica = replica
        self.guest, self.host = set(), set()
        self.rounds = {"guest": 0, "host": 0}
        self._stop = threading.Event()
        self._proc = None
        self._threads = []

    def __enter__(self):
        self._proc = subprocess.Popen(  # pylint: disable=consider-using-with
            self.replica.ssh_argv("while :; do ps -eo args=; echo @@; sleep 0.1; done"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.replica.env,
        )
        self._threads = [
            threading.Thread(target=self._read_guest, daemon=True),
            threading.Thread(target=self._sample_host, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _read_guest(self):
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            if line == "@@":
                self.rounds["guest"] += 1
            elif line:
                self.guest.add(line)

    def _sample_host(self):
        while not self._stop.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                args = b" ".join(cmdline(pid)).decode("utf-8", "replace").strip()
                if args:
                    self.host.add(args)
            self.rounds["host"] += 1
            self._stop.wait(0.1)

    def __exit__(self, *exc):
        self._stop.set()
        self._proc.kill()  # the ssh client this sampler started (replica.sh ssh execs it)
        self._proc.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)

    def found(self, secret):
        """How many distinct argv, in the guest and on this host, hold ``secret``."""
        return {
            "guest": sum(secret in a for a in self.guest),
            "host": sum(secret in a for a in self.host),
        }


def descendants(pid):
    """Every pid below ``pid`` in this host's process tree."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid):
    """The argv of ``pid`` (bytes, split at NUL; [] when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []
