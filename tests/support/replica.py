"""
Host-side driver of the replica host (scripts/replica.sh): boot it, talk to it over ssh, drive
the formula with salt-ssh exactly as the operator does (roster entry ``hetzner``), take read-only
snapshots of what the formula touches (tests/support/guest.py, run in the guest), and time
``POST /reservations``. Used by the e2e tests and by the programs built on the replica
(``python -m tools.mainjob``, ``python -m tools.proof``).

Everything here runs on the host with the standard library (plus PyYAML, which Salt brings).
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import salt.utils.dictupdate
import yaml

from tests.support.loader import merge_settings
from tests.support.paths import FORMULA_ROOT, REPO

REPLICA_SH = REPO / "scripts" / "replica.sh"
ROSTER_ID = "hetzner"
APP_PORT = 3000
HEALTH_URL_IN_GUEST = f"http://127.0.0.1:{APP_PORT}/health"
VENV_BIN = Path(os.environ.get("SERVERFIX_VENV", "/var/cache/serverfix/venv")) / "bin"
APP_DIR = "/var/www/intranet/backend"  # where the server keeps the backend
ENV_FILE = f"{APP_DIR}/.env"
BACKUP_DIR = "/var/backups/serverfix"  # the formula's default serverfix:backups:dir
BACKEND = "intranet-backend"  # its pm2 process
RESTART_FLAG = 'pillar={"serverfix": {"backend": {"restart": true}}}'  # the operator's consent
THIN_DIR = "/var/tmp/serverfix-salt"  # salt-ssh's thin Salt on the guest (the roster's thin_dir)

# what the formula may touch on the server; step 2 checksums all of it before and after test=True
TOUCHED_FILES = [
    ENV_FILE,
    "/etc/fstab",
    "/etc/sysctl.conf",
    "/etc/sysctl.d/99-zz-serverfix.conf",
    "/etc/redis/redis.conf",
    "/root/.pm2/dump.pm2",
    "/swapfile",
]
TOUCHED_DIRS = [APP_DIR, "/etc/sysctl.d", "/etc/redis", "/root/.pm2"]


def run_command(argv, timeout, check=True, **kwargs):
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} -> rc {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


class Replica:
    """One replica host, driven through scripts/replica.sh; ``name``: one of several side by side
    (REPLICA_NAME, e.g. a fleet member ``hetzner-2``), else the default replica."""

    def __init__(self, name=None):
        self.name = name
        self.env = {**os.environ, "REPLICA_NAME": name} if name else None
        self.facts = {}

    def script(self, *args, timeout=900, check=True, stdin=None):
        return run_command(
            ["bash", str(REPLICA_SH), *args],
            timeout=timeout,
            check=check,
            env=self.env,
            input=stdin,
        )

    def read_facts(self):
        self.facts = dict(line.split("=", 1) for line in self.script("env").stdout.split())
        return self.facts

    def up(self):
        started = time.monotonic()
        self.script("up")
        self.read_facts()
        return time.monotonic() - started

    def down(self):
        self.script("down", timeout=300)

    @property
    def ip(self):
        return self.facts["REPLICA_IP"]

    def ssh(self, command, timeout=300, check=True, stdin=None):
        return self.script("ssh", command, timeout=timeout, check=check, stdin=stdin)

    def reboot(self):
        started = time.monotonic()
        self.script("reboot", timeout=180)
        return time.monotonic() - started

    def snapshot(self, swap_file="/swapfile"):
        """Read-only facts about everything the formula may change (runs guest.py in the guest)."""
        probe = (Path(__file__).parent / "guest.py").read_text(encoding="utf-8")
        args = json.dumps(
            {
                "files": TOUCHED_FILES,
                "dirs": TOUCHED_DIRS,
                "swap_file": swap_file,
                "health_url": HEALTH_URL_IN_GUEST,
            }
        )
        proc = self.ssh(f"python3 - '{args}'", stdin=probe, timeout=60)
        return json.loads(proc.stdout)

    def backend_log(self, lines=400):
        return self.ssh(
            f"tail -n {lines} /root/.pm2/logs/{BACKEND}-out.log", timeout=30
        ).stdout.splitlines()

    # --- the app, from the host over the veth ----------------------------------------------------
    def url(self, path):
        return f"http://{self.ip}:{APP_PORT}{path}"

    def get_json(self, path, timeout=10):
        with _OPENER.open(self.url(path), timeout=timeout) as response:
            return json.loads(response.read())

    def app_mode(self):
        """'queue' / 'fallback' from GET /health, or None while the app does not answer."""
        try:
            return self.get_json("/health", timeout=5).get("mode")
        except (OSError, ValueError):
            return None

    def post_reservation(self, number, timeout=30):
        body = json.dumps({"room": f"Raum {number % 7 + 1}", "by": "serverfix-e2e"}).encode()
        request = urllib.request.Request(
            self.url("/reservations"),
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        started = time.perf_counter()
        with _OPENER.open(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        return (time.perf_counter() - started) * 1000, response.status, payload

    def latency(self, requests, concurrency=5):
        """``requests`` POST /reservations, ``concurrency`` at a time: per-request ms, p50, p95."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(self.post_reservation, range(requests)))
        times = sorted(ms for ms, _, _ in results)
        return {
            "requests": requests,
            "concurrency": concurrency,
            "p50_ms": round(percentile(times, 50), 1),
            "p95_ms": round(percentile(times, 95), 1),
            "min_ms": round(times[0], 1),
            "max_ms": round(times[-1], 1),
            "statuses": sorted({status for _, status, _ in results}),
            "modes": sorted({payload.get("mode") for _, _, payload in results}),
        }


# requests go straight to the replica (a proxy from the environment must not see them)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an ascending list (p95 of 10 values is the 10th)."""
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


class SaltSsh:
    """
    salt-ssh from the host venv against the replica, with its own config dir:
    roster entry ``hetzner``, file_roots = <repo>/formula only, pinned host keys, thin dir on the
    guest.
    """

    def __init__(self, workdir, replica, pillar):
        self.dir = Path(workdir)
        self.replica = replica
        self.pillar = pillar
        self.transcript = []  # every stdout/stderr, for the no-secrets check
        (self.dir / "pillar").mkdir(parents=True, exist_ok=True)
        (self.dir / "pillar" / "top.sls").write_text(
            "base:\n  '*':\n    - serverfix\n", encoding="utf-8"
        )
        (self.dir / "pillar" / "serverfix.sls").write_text(
            yaml.safe_dump({"serverfix": pillar}, allow_unicode=True), encoding="utf-8"
        )
        facts = replica.facts
        (self.dir / "roster").write_text(
            yaml.safe_dump(
                {
                    ROSTER_ID: {
                        "host": facts["REPLICA_IP"],
                        "user": "root",
                        "priv": facts["REPLICA_KEY"],
                        "thin_dir": THIN_DIR,
                    }
                }
            ),
            encoding="utf-8",
        )
        (self.dir / "master").write_text(
            yaml.safe_dump(
                {
                    "root_dir": str(self.dir),  # salt puts pki_dir, cachedir and log_file below it
                    "cachedir": "cache",
                    "pki_dir": "pki",
                    "file_roots": {"base": [str(FORMULA_ROOT)]},
                    "pillar_roots": {"base": [str(self.dir / "pillar")]},
                    "roster_file": str(self.dir / "roster"),
                    "known_hosts_file": facts["REPLICA_KNOWN_HOSTS"],
                    "log_file": "master.log",
                    "ssh_log_file": str(self.dir / "ssh.log"),
                }
            ),
            encoding="utf-8",
        )

    def settings(self, **override):
        """The merged settings (defaults.yaml + pillar) for module calls: salt-ssh module calls have
        no file server on the target, so ``serverfix.diagnose``/``verify`` get them as
        ``config``."""
        return merge_settings(salt.utils.dictupdate.merge(self.pillar, override))

    def argv(self, *args):
        return [
            str(VENV_BIN / "salt-ssh"),
            "-c",
            str(self.dir),
            "--out=json",
            "--static",
            "--no-color",
            ROSTER_ID,
            *args,
        ]

    def run(self, *args, timeout=600):
        """Run salt-ssh; returns (returncode, the target's data, seconds)."""
        started = time.monotonic()
        proc = run_command(self.argv(*args), timeout=timeout, check=False)
        elapsed = time.monotonic() - started
        self.transcript += [proc.stdout, proc.stderr]
        try:
            data = json.loads(proc.stdout)[ROSTER_ID]
        except (ValueError, KeyError) as exc:
            raise AssertionError(
                f"salt-ssh {' '.join(args)}: no JSON for {ROSTER_ID} (rc {proc.returncode}): "
                f"{exc}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
            ) from exc
        return proc.returncode, data, elapsed

    def call(self, function, config=None, timeout=300):
        args = [function]
        if config is not None:
            args.append("config=" + json.dumps(config))
        return self.run(*args, timeout=timeout)

    def apply(self, *args, timeout=900):
        rc, data, elapsed = self.run("state.apply", "serverfix", *args, timeout=timeout)
        return rc, StateRun(data), elapsed


class StateRun:
    """The states of one ``state.apply`` return, in run order."""

    def __init__(self, data):
        if not isinstance(data, dict):
            raise AssertionError(f"state.apply did not return states: {data!r}")
        self.raw = data
        self.states = sorted(data.values(), key=lambda s: s.get("__run_num__", 0))

    def by_id(self, state_id):
        for state in self.states:
            if state.get("__id__") == state_id:
                return state
        raise KeyError(f"no state {state_id!r}; states: {[s.get('__id__') for s in self.states]}")

    def ids(self):
        return [s.get("__id__") for s in self.states]

    @property
    def failed(self):
        return [s for s in self.states if s.get("result") is False]

    @property
    def changed(self):
        return [s for s in self.states if s.get("changes")]

    @property
    def pending(self):
        return [s for s in self.states if s.get("result") is None]

    def describe(self, states=None):
        return "\n".join(
            f"  {s.get('__id__')}: result={s.get('result')} "
            f"changes={sorted(s.get('changes') or {})} "
            f"comment={str(s.get('comment'))[:300]!r}"
            for s in (self.states if states is None else states)
        )


def fixture_secrets():
    """The secret values of the replica's .env (made up, but they must never show up anywhere)."""
    secrets = []
    for line in (
        (REPO / "replica" / "fixture" / "backend.env").read_text(encoding="utf-8").splitlines()
    ):
        key, sep, value = line.partition("=")
        if sep and any(word in key for word in ("SECRET", "PASSWORD", "DATABASE_URL")):
            value = value.split(" #")[0].strip().strip("'\"")
            secrets.append(value)
            if "://" in value:  # the password inside the URL on its own
                secrets.append(value.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1])
    return [secret for secret in secrets if len(secret) >= 8]


def salt_pin():
    """The salt requirement line of requirements-test.txt (one pin for host and guest)."""
    for line in (REPO / "requirements-test.txt").read_text(encoding="utf-8").splitlines():
        if line.strip().lower().startswith("salt=="):
            return line.strip()
    raise AssertionError("requirements-test.txt pins no salt== version")


def venv_tool(name):
    path = VENV_BIN / name
    if not path.exists():
        found = shutil.which(name)
        if not found:
            raise AssertionError(
                f"{path} missing: run ./scripts/test.sh or ./scripts/run-replica.sh "
                "(they set up the venv)"
            )
        return Path(found)
    return path
