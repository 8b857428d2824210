"""
The proof's lab: its own replica (named ``proof``, call-counting wrappers on its PATH), salt-ssh
with a second file root for the one-state baseline SLS, the ``Lab`` that boots fresh replicas and
collects the report, and read-only guest facts for the checks.
"""

import base64
import datetime
import json
import os
import platform
import secrets
import shlex
import time
from pathlib import Path

import salt.utils.dictupdate
import yaml

from tests.support.host import wait_for
from tests.support.paths import REPO
from tests.support.replica import (
    BACKEND,
    ENV_FILE,
    HEALTH_URL_IN_GUEST,
    REPLICA_SH,
    ROSTER_ID,
    THIN_DIR,
    Replica,
    SaltSsh,
    StateRun,
    run_command,
    venv_tool,
)
from tools.proof.calls import (
    CALLS_DIR,
    CALLS_LOG,
    INSTRUMENT,
    MARKER,
    WRAPPED,
    WRAPPER,
    summarize_calls,
)

BASELINE_SLS = "proof_baseline"
ARTIFACTS = REPO / "artifacts"
SPEED_GOAL = 1.5  # no-op serverfix / one-state SLS, same transport
# the replica of the proof: its own name and subnet (never the main job's), waiting for the lock
REPLICA_ENV = {
    "REPLICA_NAME": os.environ.get("SERVERFIX_PROOF_REPLICA", "proof"),
    "REPLICA_SUBNET": os.environ.get("SERVERFIX_PROOF_SUBNET", "9"),
    "REPLICA_LOCK_WAIT": os.environ.get("SERVERFIX_PROOF_LOCK_WAIT", "1800"),
}
MODES = {
    # CI: every scenario and fault once, 3 interleaved speed repetitions of the state runs (diagnose
    # and verify timed once), four kinds of bad pillar value, the .env made read-only by chattr +i
    # only (not also by a read-only mount), the files written during the runs scanned
    "ci": {
        "reps": 3,
        "full_apply_reps": 1,
        "pillar_cases": "ci",
        "world_scan": "changed",
        "ro_mount": False,
        "speed_kinds": ("noop", "baseline", "preview", "baseline_preview"),
    },
    # local: 7 repetitions (diagnose and verify too), the full apply timed on 3 fresh replicas,
    # every pillar case, the world-readable scan over the whole guest file system, issue 12's cases
    "full": {
        "reps": 7,
        "full_apply_reps": 3,
        "pillar_cases": "all",
        "world_scan": "all",
        "ro_mount": True,
        "speed_kinds": ("noop", "baseline", "preview", "baseline_preview", "diagnose", "verify"),
    },
}


class ProofReplica(Replica):
    """A replica named ``proof`` (REPLICA_ENV) with call-counting wrappers on its PATH."""

    def __init__(self):
        super().__init__()
        self.env = dict(os.environ, **REPLICA_ENV)

    def down(self):
        """Tear it down; once more after a pause when the first try fails (the rootfs can stay
        busy for a moment while the guest's last processes exit)."""
        try:
            super().down()
        except AssertionError:
            time.sleep(5)
            super().down()

    def ssh(self, command, timeout=300, check=True, stdin=None):
        """A command in the guest as root (``replica.sh ssh``)."""
        return run_command(
            self.ssh_argv(command), timeout=timeout, check=check, input=stdin, env=self.env
        )

    def ssh_argv(self, command):
        """The argv of ``replica.sh ssh`` (for a process this side keeps running)."""
        return ["bash", str(REPLICA_SH), "ssh", command]

    @property
    def rootfs(self):
        """The guest's root file system as seen from this host."""
        return Path(self.facts["REPLICA_ROOTFS"])

    def up(self):
        """Boot it (fresh) and put the call-counting wrappers on its PATH; seconds taken."""
        seconds = super().up()
        self.instrument()
        return seconds

    def instrument(self):
        """Install the call-counting wrappers (calls.py) in the guest."""
        script = [
            INSTRUMENT.replace("@DIR@", CALLS_DIR)
            .replace("@LOG@", CALLS_LOG)
            .replace("@MARKER@", MARKER)
        ]
        for name, real in list(WRAPPED.items()) + [("pm2", "@PM2_REAL@")]:
            body = (
                WRAPPER.replace("@NAME@", name)
                .replace("@THIN@", THIN_DIR)
                .replace("@LOG@", CALLS_LOG)
                .replace("@REAL@", real)
            )
            target = '"$pm2"' if name == "pm2" else f"/usr/local/sbin/{name}"
            script.append(f"cat > {target} <<'EOF'\n{body}EOF\nchmod 755 {target}")
        script.append('sed -i "s|@PM2_REAL@|$pm2.real|" "$pm2"')
        self.ssh("sh -s", stdin="\n".join(script) + "\n", timeout=60)

    def calls_mark(self):
        """Where the call log ends now (bytes)."""
        return int(self.ssh(f"stat -c %s {CALLS_LOG}", timeout=30).stdout.strip() or 0)

    def calls_since(self, mark=0):
        """``[(tool, via, argv)]`` logged after ``mark`` (records end in NUL: argv may hold
        newlines)."""
        out = self.ssh(f"tail -c +{mark + 1} {CALLS_LOG}", timeout=30).stdout
        return [
            tuple((rec.split("\t", 2) + ["", ""])[:3]) for rec in out.split("\0") if rec.strip()
        ]

    def dotenv_values(self, path=ENV_FILE):
        """The .env as the backend reads it: the guest's own npm dotenv (the stand-in's
        node_modules)."""
        code = (
            "const fs=require('fs');"
            "const d=require('/var/www/intranet/backend/node_modules/dotenv');"
            f"process.stdout.write(JSON.stringify(d.parse(fs.readFileSync({json.dumps(path)}))))"
        )
        return json.loads(self.ssh(f"node -e {shlex.quote(code)}", timeout=30).stdout)

    def backend(self):
        """The pm2 status of the backend (None when pm2 does not list it)."""
        out = self.ssh("pm2 jlist 2>/dev/null | sed -n '/^\\[/,$p'", timeout=30, check=False).stdout
        try:
            procs = {p["name"]: p["pm2_env"]["status"] for p in json.loads(out or "[]")}
        except ValueError:
            procs = {}
        return procs.get(BACKEND)


# --------------------------------------------------------------------------------------------------
# salt-ssh with a second file root for the one-state baseline


def baseline_root(directory):
    """``<directory>/baseline-root``: a file root with the one-state SLS ``BASELINE_SLS`` that
    the no-op runs are compared with (the same for every transport)."""
    root = Path(directory) / "baseline-root"
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{BASELINE_SLS}.sls").write_text(
        "# the cheapest possible state run over the same transport: one state, no change\n"
        "proof-baseline-one-state:\n  test.succeed_without_changes: []\n",
        encoding="utf-8",
    )
    return root


class ProofSaltSsh(SaltSsh):
    """``SaltSsh`` (config dir, roster ``hetzner``, pillar) plus the baseline SLS and a scan of
    its outputs."""

    def __init__(self, workdir, replica, pillar, secret_values=(), cachedir=None):
        super().__init__(workdir, replica, pillar)
        self.secret_values = [s for s in secret_values if s]
        extra_root = baseline_root(self.dir)
        master = yaml.safe_load((self.dir / "master").read_text(encoding="utf-8"))
        master["file_roots"]["base"].append(str(extra_root))
        if (
            cachedir
        ):  # one salt-ssh cache (its thin tarball) for all the lab's runs: less work per run
            # relative: Salt puts every path option below root_dir, absolute ones too
            master["cachedir"] = os.path.relpath(cachedir, self.dir)
        (self.dir / "master").write_text(yaml.safe_dump(master), encoding="utf-8")
        self.cachedir = Path(cachedir) if cachedir else self.dir / "cache"
        self.runs = 0

    def set_pillar(self, pillar, secret_values=()):
        """Another pillar for the next runs (the same config dir, cache and keys)."""
        self.pillar = pillar
        (self.dir / "pillar" / "serverfix.sls").write_text(
            yaml.safe_dump({"serverfix": pillar}, allow_unicode=True), encoding="utf-8"
        )
        self.secret_values += [s for s in secret_values if s and s not in self.secret_values]

    def attempt(self, *args, timeout=900):
        """salt-ssh that never raises: (rc, data or None, seconds, stdout + stderr)."""
        started = time.monotonic()
        proc = run_command(self.argv(*args), timeout=timeout, check=False)
        seconds = time.monotonic() - started
        self.transcript += [proc.stdout, proc.stderr]
        self.runs += 1
        try:
            data = json.loads(proc.stdout)[ROSTER_ID]
        except (ValueError, KeyError, TypeError):
            data = None
        return proc.returncode, data, seconds, proc.stdout + proc.stderr

    def outputs(self, job_cache=True):
        """Everything salt-ssh printed, logged or cached on this side: its stdout and stderr, its
        logs and (``job_cache``) the job cache, which the lab's runs share (the pillar it was
        given is input, not output)."""
        texts = list(self.transcript)
        files = [self.dir / "master.log", self.dir / "ssh.log"]
        if job_cache:
            files += job_cache_files(self.cachedir)
        texts += [p.read_bytes().decode("utf-8", "replace") for p in files if p.is_file()]
        return texts

    def leaks(self, values=None, job_cache=True):
        """Secret values (``values``, or this run's own) found in :meth:`outputs` (shortened)."""
        texts = self.outputs(job_cache)
        values = self.secret_values if values is None else values
        return sorted({s[:4] + "…" for s in values if s and any(s in t for t in texts)})


def job_cache_files(cachedir):
    """The files of the salt-ssh job cache below ``cachedir``."""
    return [p for p in (Path(cachedir) / "jobs").rglob("*") if p.is_file()]


def state_run(data):
    """A StateRun, or None when salt-ssh returned no states (a render error, a lost connection)."""
    return (
        StateRun(data)
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values())
        else None
    )


def first_error(data, output=""):
    """The first failed state's comment, or salt-ssh's own error text."""
    run = state_run(data)
    if run:
        failed = run.failed
        return str(failed[0].get("comment")) if failed else ""
    if isinstance(data, list):
        return " ".join(map(str, data))
    if isinstance(data, (str, dict)) and data:
        return json.dumps(data) if isinstance(data, dict) else data
    return output.strip()[-800:]


# --------------------------------------------------------------------------------------------------
# the lab: its own replica, fresh when asked


class Lab:
    """Boots the proof replica (fresh when asked), runs salt-ssh against it, collects the report."""

    def __init__(self, workdir, mode="ci", say=print):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        self.workdir = Path(workdir)
        self.mode, self.opts = mode, MODES[mode]
        self.say = say
        self.replica = ProofReplica()
        # a Redis password of the allowed form: the secrets check looks for it everywhere
        self.password = "sfProof" + secrets.token_hex(12)
        self.pillar = {"verify": {"url": HEALTH_URL_IN_GUEST}, "redis": {"password": self.password}}
        self.salt_runs = []  # every ProofSaltSsh of this lab (transcripts for the secrets check)
        # issue 12: values that must be in no output of any run (dotenv:extra values, URL
        # credentials, a hand-set requirepass), and their hits found in guests before teardown
        self.extra_secrets = []
        self.extra_guest_hits = 0
        self.boots = 0
        self.report = {"meta": meta(mode)}

    # -- replica -----------------------------------------------------------------------------------
    def fresh(self, label):
        """A clean replica in the "before" state (the previous one torn down), instrumented."""
        self.say(f"[{label}] fresh replica")
        if self.boots:
            self.replica.down()
        self.replica.up()
        self.boots += 1

    def close(self):
        """Tear the replica down, if one was booted."""
        if self.boots:
            self.replica.down()

    def merged(self, pillar):
        """The lab's pillar with ``pillar`` merged over it (or instead of it, when not a
        mapping)."""
        if pillar is None:
            return self.pillar
        if not isinstance(pillar, dict):
            return pillar
        # merged as Salt merges a pillar= override into the pillar
        return salt.utils.dictupdate.merge(self.pillar, pillar)

    def salt(self, label, pillar=None, extra_secrets=()):
        """salt-ssh against the current replica with the lab's pillar (+ ``pillar`` merged or
        replacing)."""
        merged = self.merged(pillar)
        path = self.workdir / f"salt-{len(self.salt_runs):02d}-{label}"
        ssh = ProofSaltSsh(
            path,
            self.replica,
            merged,
            secret_values=[self.password, *extra_secrets],
            cachedir=self.workdir / "salt-cache",
        )
        self.salt_runs.append(ssh)
        return ssh

    def apply(self, ssh, *args):
        """One measured run: (rc, StateRun or None, seconds, calls summary, raw data, output)."""
        mark = self.replica.calls_mark()
        if args and args[0] in ("serverfix.diagnose", "serverfix.verify", "test.ping"):
            rc, data, seconds, output = ssh.attempt(*args)
        elif args and args[0] == BASELINE_SLS:
            rc, data, seconds, output = ssh.attempt("state.apply", *args)
        else:
            rc, data, seconds, output = ssh.attempt("state.apply", "serverfix", *args)
        calls = self.replica.calls_since(mark)
        return {
            "rc": rc,
            "run": state_run(data),
            "seconds": round(seconds, 2),
            "calls": summarize_calls(calls),
            "data": data,
            "output": output,
        }


def meta(mode):
    """The report's header: mode, commit, Salt version, machine, transport."""
    commit = run_command(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], timeout=30, check=False
    ).stdout.strip()
    salt_version = run_command(
        [str(venv_tool("salt-ssh")), "--version"], timeout=60, check=False
    ).stdout.strip()
    return {
        "mode": mode,
        "opts": MODES[mode],
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": commit,
        "salt": salt_version,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "transport": f"salt-ssh, roster entry {ROSTER_ID}, replica {REPLICA_ENV['REPLICA_NAME']}",
    }


# --------------------------------------------------------------------------------------------------
# guest facts for the checks (read-only)


def guest_file(replica, path):
    """(bytes or None, octal mode or None, is a symlink) of a guest file, via ssh (follows
    symlinks)."""
    out = replica.ssh(
        f"if [ -e {path} ]; then stat -L -c %a {path}; [ -L {path} ] && echo link || echo file; "
        f"base64 -w0 < {path}; fi",
        timeout=30,
    ).stdout.split("\n")
    if len(out) < 3:
        return None, None, False
    return base64.b64decode(out[2]), out[0], out[1] == "link"


def backups(replica, path=ENV_FILE):
    """``{backup path: octal mode}`` of serverfix's backups of ``path`` (its symlink target's:
    ``<target>.*.bak`` below the default backup directory /var/backups/serverfix, and next to
    it, where earlier versions put them)."""
    out = replica.ssh(
        f't=$(readlink -f {path}); for f in /var/backups/serverfix"$t".*.bak "$t".*.bak; do '
        '[ -e "$f" ] && stat -c \'%a %n\' "$f"; done; true',
        timeout=30,
    ).stdout
    return {
        line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in out.splitlines() if " " in line
    }


def backend_up(replica, timeout=20):
    """The backend is online in pm2 and answers /health (waits out a restart in progress)."""
    return bool(
        wait_for(lambda: replica.backend() == "online" and replica.app_mode() is not None, timeout)
    )


def swap_not_half_made(snapshot, size=2 << 30):
    """No swap file, or a whole one: active, the full size, one fstab line."""
    info = snapshot["files"].get("/swapfile")
    if info is None:
        return not snapshot["fstab_swap"] and not snapshot["swap_active"]
    return snapshot["swap_active"] and info["size"] == size and len(snapshot["fstab_swap"]) == 1


def stray_swap_temps(replica):
    """Temp files a swap-file creation could leave next to it."""
    return (
        replica.ssh(
            "ls -a / | grep -c -i 'swapfile.*new\\|swapfile.*tmp' || true", timeout=30
        ).stdout.strip()
        != "0"
    )
