"""
Runs INSIDE the replica (``ssh root@replica python3 - '<json args>'``), read-only: prints one JSON
object with the facts the end-to-end steps compare. Standard library only (the guest's python3).

Never starts anything: pm2 is asked only when its daemon already runs (``pm2 jlist`` would
otherwise spawn one).
"""

import hashlib
import json
import os
import subprocess
import sys
import urllib.request

BIG = 64 << 20  # a swap file's bytes say nothing: size, mode and owner are enough


def file_facts(path):
    """sha256 (files up to BIG), mode, owner and size of ``path``; None when it does not exist."""
    try:
        st = os.stat(path)
        digest = hashlib.sha256()
        if st.st_size <= BIG:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        return {
            "sha256": digest.hexdigest() if st.st_size <= BIG else None,
            "mode": oct(st.st_mode & 0o7777),
            "uid": st.st_uid,
            "size": st.st_size,
        }
    except FileNotFoundError:
        return None


def listing(path):
    try:
        return sorted(name for name in os.listdir(path) if name != "logs")
    except FileNotFoundError:
        return None


def run(*argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout.strip()


def pm2_processes(pm2_home="/root/.pm2"):
    try:
        with open(os.path.join(pm2_home, "pm2.pid"), encoding="ascii") as handle:
            os.kill(int(handle.read().strip()), 0)
    except (OSError, ValueError):
        return None  # no daemon: do not start one
    env = dict(os.environ, PM2_HOME=pm2_home)
    proc = subprocess.run(["pm2", "jlist"], capture_output=True, text=True, env=env, check=False)
    start = proc.stdout.find("[")
    procs = json.loads(proc.stdout[start:]) if start >= 0 else []
    return sorted(
        (
            {
                "name": p["name"],
                "pid": p.get("pid"),
                "status": p["pm2_env"].get("status"),
                "restart_time": p["pm2_env"].get("restart_time"),
                "pm_uptime": p["pm2_env"].get("pm_uptime"),
            }
            for p in procs
        ),
        key=lambda p: p["name"],
    )


def pm2_saved(pm2_home="/root/.pm2"):
    try:
        with open(os.path.join(pm2_home, "dump.pm2"), encoding="utf-8") as handle:
            return sorted(p.get("name") for p in json.load(handle))
    except FileNotFoundError:
        return None


def health(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


def main():
    args = json.loads(sys.argv[1])
    swap_file = args["swap_file"]
    with open("/proc/swaps", encoding="utf-8") as handle:
        swaps = [line.split()[0] for line in handle.readlines()[1:]]
    # bytes: an fstab may hold bytes that are not UTF-8 (a Latin-1 comment)
    with open("/etc/fstab", "rb") as handle:
        fstab_swap = [
            line.strip().decode("utf-8", "replace")
            for line in handle
            if line.split()[:1] == [os.fsencode(swap_file)]
        ]
    sysctl = {}
    for key in ("vm.swappiness", "vm.vfs_cache_pressure", "vm.overcommit_memory"):
        with open("/proc/sys/" + key.replace(".", "/"), encoding="ascii") as handle:
            sysctl[key] = int(handle.read())
    redis_pkg = run("dpkg-query", "-W", "-f=${Status}", "redis-server")
    facts = {
        "files": {path: file_facts(path) for path in args["files"]},
        "dirs": {path: listing(path) for path in args["dirs"]},
        "redis_installed": redis_pkg[0] == 0 and "ok installed" in redis_pkg[1],
        "redis_active": run("systemctl", "is-active", "redis-server")[1],
        "redis_enabled": run("systemctl", "is-enabled", "redis-server")[1],
        "redis_ping": run("redis-cli", "-h", "127.0.0.1", "ping")[1] if redis_pkg[0] == 0 else "",
        "swap_active": swap_file in swaps,
        "fstab_swap": fstab_swap,
        "sysctl": sysctl,
        "pm2": pm2_processes(),
        "pm2_saved": pm2_saved(),
        "health": health(args["health_url"]),
        "system": run("systemctl", "is-system-running")[1],
    }
    json.dump(facts, sys.stdout)


if __name__ == "__main__":
    main()
