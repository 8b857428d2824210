"""
The fault matrix: each fault from a clean replica must end with a clear error (or be handled
correctly) and lose nothing: the ``.env`` byte-identical or restored, the backend running, no
half-made swap file. Each function of ``FAULTS_ON_FRESH_REPLICAS`` boots its own replica; the
faults the preflight refuses are in preflight_faults.py (``Fault`` is shared).
"""

import os
import signal
import subprocess
import time

from tests.support.replica import BACKUP_DIR, ENV_FILE, RESTART_FLAG
from tools.proof.argv import cmdline, descendants
from tools.proof.lab import (
    backend_up,
    backups,
    first_error,
    guest_file,
    stray_swap_temps,
    swap_not_half_made,
)
from tools.proof.stats import core_state, differences, run_summary


class Fault:
    """One fault: its report entry, built up by the scenario function."""

    def __init__(self, lab, fid, title):
        self.lab, self.replica = lab, lab.replica
        self.entry = {
            "id": fid,
            "title": title,
            "outcome": None,
            "ok": False,
            "error": "",
            "checks": {},
        }
        self.started = time.monotonic()
        self.snap, self.env_bytes, self.env_mode, self.env_values = None, None, None, {}

    def before(self):
        """What the checks compare with: a snapshot, the .env's bytes, mode and values."""
        self.snap = self.replica.snapshot()
        self.env_bytes, self.env_mode, _ = guest_file(self.replica, ENV_FILE)
        self.env_values = self.replica.dotenv_values()

    def check(self, name, passed):
        """Record one named check; returns whether it passed."""
        self.entry["checks"][name] = bool(passed)
        return bool(passed)

    def ran(self, result, expect=(), refused_by="serverfix-preflight"):
        """A run that must fail with a clear error: rc != 0, ``refused_by`` failed, its comment
        has ``expect``."""
        error = first_error(result["data"], result["output"])
        self.entry["error"] = error[:600]
        self.entry["rc"] = result["rc"]
        self.entry["run_seconds"] = result["seconds"]
        self.check("run failed (rc != 0)", result["rc"] != 0)
        if refused_by:
            failed = [s["__id__"] for s in result["run"].failed] if result["run"] else []
            self.check(f"{refused_by} failed", refused_by in failed)
        missing = [word for word in expect if word not in error]
        self.check("error names " + ", ".join(expect), not missing)
        return error

    def nothing_changed(self):
        """Check that the snapshot is the same as before(); returns the new one."""
        after = self.replica.snapshot()
        changed = differences(core_state(self.snap), core_state(after))
        self.entry["changed"] = changed
        self.check("nothing changed (files, pm2, Redis, swap, sysctl)", not changed)
        return after

    def nothing_lost(self, after=None, env_restored=False, changed_keys=()):
        """The .env byte-identical (or its keys intact but the managed ones and ``changed_keys``,
        plus a backup of the original), backend running, no half-made swap file."""
        after = after or self.replica.snapshot()
        data, mode, _ = guest_file(self.replica, ENV_FILE)
        if env_restored or data == self.env_bytes:
            self.check(".env byte-identical to before", data == self.env_bytes)
        else:
            values = self.replica.dotenv_values()
            kept = all(
                values.get(k) == v
                for k, v in self.env_values.items()
                if k not in MANAGED_KEYS and k not in changed_keys
            )
            self.check("every other .env key reads the same (npm dotenv)", kept)
            originals = [
                p for p in backups(self.replica) if guest_file(self.replica, p)[0] == self.env_bytes
            ]
            self.check("a backup holds the original .env byte for byte", originals)
        self.check(".env mode kept", mode == self.env_mode)
        self.check("backend online and answering", backend_up(self.replica))
        self.check(
            "no half-made swap file",
            swap_not_half_made(after) and not stray_swap_temps(self.replica),
        )

    def done(self, outcome):
        """Close the entry: its outcome, verdict and seconds (said on the terminal)."""
        self.entry["outcome"] = outcome
        self.entry["ok"] = all(self.entry["checks"].values())
        self.entry["seconds"] = round(time.monotonic() - self.started, 1)
        state = (
            "ok"
            if self.entry["ok"]
            else "FAILED: " + ", ".join(k for k, v in self.entry["checks"].items() if not v)
        )
        self.lab.say(f"[fault] {self.entry['id']}: {outcome}; {state}")
        return self.entry


MANAGED_KEYS = (
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "QUEUE_ENABLED",
    "QUEUE_CONCURRENCY",
)


def managed_values(lab):
    """The six queue keys as the .env must read after a run with the lab's pillar."""
    return {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "REDIS_PASSWORD": lab.password,
        "REDIS_DB": "0",
        "QUEUE_ENABLED": "true",
        "QUEUE_CONCURRENCY": "5",
    }


def fault_redis_port_taken(lab):
    """Another program holds 127.0.0.1:6379: Phase 1 fails clearly, the re-run after freeing
    the port completes (past systemd's start limit)."""
    fault = Fault(
        lab, "Redis cannot start", "another program listens on 127.0.0.1:6379 in the guest"
    )
    lab.fresh("fault: Redis port taken")
    fault.before()
    replica = lab.replica
    replica.ssh(
        "systemd-run -q --unit=proof-port-squatter python3 -m http.server --bind 127.0.0.1 6379 && "
        "for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; "
        "sleep 0.1; done"
    )
    ssh = lab.salt("redis-port-taken")
    result = lab.apply(ssh)
    fault.ran(result, ["6379", "in use"], refused_by=None)
    failed = [s["__id__"] for s in result["run"].failed] if result["run"] else []
    fault.entry["failed_states"] = failed
    fault.check("a Phase 1 state failed", any(s.startswith("serverfix-redis-") for s in failed))
    fault.check(
        ".env not touched (Phase 2 needs Phase 1)",
        guest_file(replica, ENV_FILE)[0] == fault.env_bytes,
    )
    fault.nothing_lost()
    # systemd's start limit (Restart=always retries until it refuses further starts for 10 s, even
    # once the port is free: CI hit it by timing). A 5 min window here makes the refusal outlast
    # the re-run's start-up on any machine; the starts drive the unit into it now
    limit = replica.ssh(
        "install -d /run/systemd/system/redis-server.service.d && "
        "printf '[Unit]\\nStartLimitIntervalSec=300\\n' "
        "> /run/systemd/system/redis-server.service.d/proof-start-limit.conf && "
        "systemctl daemon-reload; since=$(date '+%F %T'); sleep 1; for i in $(seq 20); do "
        "systemctl start redis-server 2>/dev/null; sleep 0.3; "
        '[ "$(systemctl is-active redis-server)" = failed ] && '
        'journalctl -q -u redis-server --since "$since" '
        "| grep -q 'Start request repeated too quickly' && echo hit && break; done; true",
        timeout=90,
    ).stdout.strip()
    fault.check("redis-server had hit systemd's start limit", limit == "hit")
    replica.ssh("systemctl stop proof-port-squatter")
    lab.say("[fault] Redis cannot start: port freed, applying again")
    again = lab.apply(ssh)
    fault.entry["rerun"] = run_summary(again)
    fault.check(
        "after freeing the port the re-run completes",
        again["rc"] == 0 and again["run"] and not again["run"].failed,
    )
    fault.check(
        "the re-run reset the failed unit",
        "systemctl reset-failed redis-server.service"
        in again["calls"]["systemctl"]["mutating_calls"],
    )
    return fault.done("Phase 1 fails clearly, later phases that need it do not run")


def _env_handled(fault, lab, result):
    """A run that must succeed and leave every other .env key as npm dotenv read it."""
    fault.entry["rc"] = result["rc"]
    fault.entry["error"] = first_error(result["data"], result["output"])[:600]
    fault.check("run succeeded", result["rc"] == 0 and result["run"] and not result["run"].failed)
    values = lab.replica.dotenv_values()
    fault.check(
        "queue keys read right (npm dotenv)",
        all(values.get(k) == v for k, v in managed_values(lab).items()),
    )
    fault.nothing_lost()
    return values


def fault_env_symlink(lab):
    """The .env a symlink: the target edited, the link and the target's mode kept."""
    fault = Fault(lab, ".env symlinked", ".env is a symlink to /etc/intranet/backend.env")
    lab.fresh("fault: .env symlinked")
    target = "/etc/intranet/backend.env"
    lab.replica.ssh(
        f"install -d /etc/intranet && mv {ENV_FILE} {target} && ln -s {target} {ENV_FILE}"
    )
    fault.before()
    result = lab.apply(lab.salt("env-symlink"))
    _env_handled(fault, lab, result)
    link = lab.replica.ssh(f"readlink {ENV_FILE}; stat -c %a {target}", timeout=30).stdout.split()
    fault.check(
        "still a symlink to the same file, target mode kept",
        link[:1] == [target] and link[1:] == [fault.env_mode],
    )
    made = backups(lab.replica)
    fault.check(
        "backups of the target in the backup directory, 0600",
        made and all(p.startswith(BACKUP_DIR + target) and m == "600" for p, m in made.items()),
    )
    return fault.done("handled: the target edited, the link kept")


def fault_env_crlf(lab):
    """Every .env line ends in CRLF: still so after the edit."""
    fault = Fault(lab, ".env with CRLF", "every line of the .env ends in CRLF")
    lab.fresh("fault: .env CRLF")
    lab.replica.ssh(f"sed -i 's/$/\\r/' {ENV_FILE}")
    fault.before()
    result = lab.apply(lab.salt("env-crlf"))
    _env_handled(fault, lab, result)
    data = guest_file(lab.replica, ENV_FILE)[0] or b""
    fault.check(
        "every line still ends in CRLF",
        data.count(b"\n") == data.count(b"\r\n") and data.count(b"\r\n") > 20,
    )
    return fault.done("handled: CRLF kept on every line")


def fault_env_duplicates(lab):
    """Duplicate keys in the .env: every occurrence updated, dotenv's last-wins reading kept."""
    fault = Fault(
        lab,
        ".env with duplicate keys",
        "QUEUE_ENABLED=false twice (first and last line), LOG_LEVEL twice",
    )
    lab.fresh("fault: .env duplicate keys")
    lab.replica.ssh(
        f"sed -i '1i QUEUE_ENABLED=false' {ENV_FILE} && "
        f"printf '\\nLOG_LEVEL=debug\\nQUEUE_ENABLED=false' >> {ENV_FILE}"
    )
    fault.before()
    result = lab.apply(lab.salt("env-duplicates"))
    values = _env_handled(fault, lab, result)
    data = (guest_file(lab.replica, ENV_FILE)[0] or b"").decode()
    fault.check(
        "every QUEUE_ENABLED line now true",
        "QUEUE_ENABLED=false" not in data and data.count("QUEUE_ENABLED=true") == 2,
    )
    fault.check("LOG_LEVEL still reads debug (last one wins)", values.get("LOG_LEVEL") == "debug")
    return fault.done("handled: every occurrence updated, dotenv's last-wins reading kept")


def fault_backend_crash(lab):
    """The new .env makes the backend crash: rolled back, the failing .env kept aside."""
    fault = Fault(
        lab,
        "backend crashes after the restart",
        "the new .env makes the backend crash at start (PORT=22: sshd holds it); restart flag on",
    )
    lab.fresh("fault: backend crashes")
    fault.before()
    ssh = lab.salt(
        "backend-crash",
        pillar={"backend": {"ready_timeout": 15}, "dotenv": {"extra": {"PORT": 22}}},
    )
    result = lab.apply(ssh, RESTART_FLAG)
    fault.ran(
        result,
        ["did NOT come up", "Rollback:", "restored"],
        refused_by="serverfix-backend-restarted",
    )
    after = lab.replica.snapshot()
    fault.nothing_lost(after, env_restored=True)
    failed_copies = lab.replica.ssh(
        f"ls /var/backups/serverfix{ENV_FILE}.failed-*.bak 2>/dev/null; true"
    ).stdout.split()
    fault.check("the failing .env kept as .env.failed-*.bak in the backup dir", failed_copies)
    fault.check("backend back in its old mode (fallback)", lab.replica.app_mode() == "fallback")
    return fault.done("rolled back: .env restored, backend restarted on it")


def fault_ssh_lost(lab):
    """The ssh connection killed during the Redis install: a re-run completes, dpkg clean."""
    fault = Fault(
        lab,
        "SSH connection lost mid-run",
        "the ssh connection is killed while apt-get installs Redis",
    )
    lab.fresh("fault: ssh lost")
    fault.before()
    ssh = lab.salt("ssh-lost")
    mark = lab.replica.calls_mark()
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        ssh.argv("state.apply", "serverfix"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    try:
        end = time.monotonic() + 180
        while time.monotonic() < end and proc.poll() is None and not killed:
            if any(
                tool == "apt-get" and " install " in f" {argv} "
                for tool, _, argv in lab.replica.calls_since(mark)
            ):
                time.sleep(1)  # dpkg is unpacking now
                for pid in descendants(proc.pid):
                    args = cmdline(pid)
                    if (
                        args
                        and os.path.basename(args[0]) == b"ssh"
                        and lab.replica.ip.encode() in b" ".join(args)
                    ):
                        os.kill(pid, signal.SIGKILL)  # the ssh client salt-ssh started for this run
                        killed = pid
            time.sleep(0.2)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ssh.transcript += [out, err]
    fault.entry["killed_mid_install"] = bool(killed)
    fault.check("connection killed during the Redis install", killed)
    fault.entry["first_run"] = {"rc": proc.returncode, "output_tail": (out + err).strip()[-400:]}
    fault.check("the cut run ended with an error", proc.returncode != 0)
    fault.entry["guest_after_cut"] = lab.replica.ssh(
        "pgrep -fc 'serverfix-salt.*salt-call' || true; dpkg --audit | head -3; true", timeout=30
    ).stdout.strip()
    attempts, completed = [], False
    for attempt in range(4):
        lab.say(f"[fault] SSH connection lost: re-run {attempt + 1}")
        result = lab.apply(ssh)
        attempts.append(
            {"rc": result["rc"], "error": first_error(result["data"], result["output"])[:300]}
        )
        completed = bool(result["rc"] == 0 and result["run"] and not result["run"].failed)
        if completed:
            break
        time.sleep(10)  # the cut run may still hold the dpkg lock in the guest
    fault.entry["reruns"] = attempts
    fault.check("a re-run completes (rc 0, no failed state)", completed)
    values = lab.replica.dotenv_values()
    fault.check(
        "queue keys read right (npm dotenv)",
        all(values.get(k) == v for k, v in managed_values(lab).items()),
    )
    fault.check(
        "dpkg has nothing half-installed",
        not lab.replica.ssh("dpkg --audit", timeout=60).stdout.strip(),
    )
    fault.nothing_lost()
    return fault.done(
        f"re-run completes ({len(attempts)} re-run{'s' if len(attempts) > 1 else ''})"
    )


FAULTS_ON_FRESH_REPLICAS = [
    fault_redis_port_taken,
    fault_env_symlink,
    fault_env_crlf,
    fault_env_duplicates,
    fault_backend_crash,
    fault_ssh_lost,
]
