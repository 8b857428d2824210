"""
The measured scenarios (plain data for the report; the tests assert on it): the main sequence on
one replica with its speed runs and secrets scan, the fix in one go, a half-fixed replica, and the
extra full applies on fresh replicas.
"""

from tests.support.replica import ENV_FILE, RESTART_FLAG, ROSTER_ID, THIN_DIR
from tools.proof.argv import ArgvSampler
from tools.proof.calls import MARKER
from tools.proof.lab import BASELINE_SLS, backups, first_error, state_run
from tools.proof.stats import fidelity_entry, idempotence_entry, median, run_summary


def run_main(lab):
    """
    One replica, the password set, argv sampled: diagnose, preview, apply, preview + apply with the
    restart flag, verify, two re-applies; then the interleaved speed runs; then the secret scans.
    """
    lab.fresh("main")
    ssh = lab.salt("main")
    runs = {}
    with ArgvSampler(lab.replica) as sampler:
        # the first contact deploys salt-ssh's thin Salt to the guest: timed on its own
        lab.say(f"[main] salt-ssh {ROSTER_ID} test.ping (first contact: deploys the thin Salt)")
        runs["first_contact"] = lab.apply(ssh, "test.ping")
        for key, args in (
            ("diagnose", ("serverfix.diagnose",)),
            ("preview", ("test=True",)),
            ("apply", ()),
            ("preview_restart", (RESTART_FLAG, "test=True")),
            ("apply_restart", (RESTART_FLAG,)),
            ("verify", ("serverfix.verify",)),
            ("reapply", ()),
            ("reapply_restart", (RESTART_FLAG,)),
        ):
            lab.say(
                f"[main] salt-ssh {ROSTER_ID} "
                + (
                    args[0]
                    if key in ("diagnose", "verify")
                    else "state.apply serverfix " + " ".join(args)
                )
            )
            runs[key] = lab.apply(ssh, *args)
    out = {
        "fidelity": {
            "before": fidelity_entry(runs["preview"], runs["apply"]),
            "restart": fidelity_entry(runs["preview_restart"], runs["apply_restart"]),
        },
        "idempotence": idempotence_entry(runs["reapply"], runs["reapply_restart"]),
        "runs": {k: run_summary(v) for k, v in runs.items()},
    }
    out["speed"] = speed(lab, ssh, runs)
    out["secrets"] = secret_scan(lab, sampler)
    return out


def speed(lab, ssh, runs):
    """Interleaved repetitions on the fixed replica: no-op serverfix vs the one-state SLS, both with
    and without test=True; diagnose; verify. Medians, ratios, pm2 calls per run."""
    reps = lab.opts["reps"]
    every_kind = {
        "noop": (),
        "baseline": (BASELINE_SLS,),
        "preview": ("test=True",),
        "baseline_preview": (BASELINE_SLS, "test=True"),
        "diagnose": ("serverfix.diagnose",),
        "verify": ("serverfix.verify",),
    }
    kinds = {k: v for k, v in every_kind.items() if k in lab.opts["speed_kinds"]}
    # diagnose and verify of the measured sequence count too (the same replica, fixed by then)
    samples = {k: [runs[k]["seconds"]] if k in ("diagnose", "verify") else [] for k in every_kind}
    pm2_calls = {
        k: [runs[k]["calls"]["pm2"]["total"]] if k in ("diagnose", "verify") else []
        for k in samples
    }
    slowest = {}
    for rep in range(reps):
        lab.say(f"[speed] repetition {rep + 1}/{reps}: {', '.join(kinds)}")
        for kind, args in kinds.items():
            result = lab.apply(ssh, *args)
            samples[kind].append(result["seconds"])
            pm2_calls[kind].append(result["calls"]["pm2"]["total"])
            if kind == "noop" and result["run"]:
                for state in result["run"].states:
                    slowest.setdefault(state["__id__"], []).append(
                        float(state.get("duration") or 0) / 1000
                    )
    out = {"reps": reps, "seconds": samples, "median": {k: median(v) for k, v in samples.items()}}
    med = out["median"]
    out["ratio_noop"] = round(med["noop"] / med["baseline"], 2)
    out["ratio_preview"] = round(med["preview"] / med["baseline_preview"], 2)
    out["pm2_calls"] = {k: max(v) for k, v in pm2_calls.items()}
    out["pm2_calls"].update(
        {k: runs[k]["calls"]["pm2"]["total"] for k in ("apply", "apply_restart")}
    )
    out["noop_state_seconds"] = dict(
        sorted(((k, median(v)) for k, v in slowest.items()), key=lambda kv: -kv[1])
    )
    out["full_apply"] = [runs["apply"]["seconds"]]
    out["apply_restart"] = runs["apply_restart"]["seconds"]
    out["first_contact"] = runs["first_contact"]["seconds"]
    out["preview_before"] = runs["preview"]["seconds"]
    return out


def more_full_applies(lab, count):
    """The full apply from "before" (no restart flag: installs Redis, makes the swap file) on fresh
    replicas, after its preview as in the main sequence (the preview refreshes the package
    lists)."""
    seconds = []
    for number in range(count):
        lab.fresh(f"full apply {number + 2}")
        ssh = lab.salt("full-apply")
        lab.apply(ssh, "test.ping")
        lab.apply(ssh, "test=True")
        result = lab.apply(ssh)
        if result["run"] and not result["run"].failed:
            seconds.append(result["seconds"])
    return seconds


def _lines(replica, command, timeout=120, stdin=None):
    return [
        line
        for line in replica.ssh(command, timeout=timeout, stdin=stdin).stdout.splitlines()
        if line.strip()
    ]


def secret_scan(lab, sampler):
    """Where the Redis password must not be: salt-ssh output and logs, guest logs, argv,
    world-readable files."""
    replica, password = lab.replica, lab.password
    lab.say(
        "[secrets] searching salt-ssh output and logs, guest logs, sampled argv, "
        "world-readable files"
    )
    # the password travels on stdin into a 0600 file, never in a command line
    pattern = "/root/.proof-pattern"
    replica.ssh(f"umask 077; cat > {pattern}", stdin=password + "\n", timeout=30)
    try:
        log_files = _lines(
            replica,
            f"grep -rlaF -f {pattern} /var/log /root/.pm2/logs /root/.pm2/pm2.log "
            f"{THIN_DIR}/running_data 2>/dev/null; true",
        )
        journal = _lines(
            replica, f"journalctl -q --no-pager -o cat 2>/dev/null | grep -caF -f {pattern}; true"
        )
        scope = "" if lab.opts["world_scan"] == "all" else f"-cnewer {MARKER}"
        find = (
            "runuser -u nobody -- find / /run /tmp /dev/shm -xdev "
            "\\( -path /proc -o -path /sys \\) -prune -o "
            f"-type f {scope} -readable -print0 2>/dev/null"
        )
        world = _lines(
            replica, f"{find} | xargs -0 -r grep -laF -f {pattern} 2>/dev/null; true", timeout=900
        )
        world_checked = _lines(replica, f"{find} | tr -cd '\\0' | wc -c", timeout=900)
        thin_files = _lines(replica, f"grep -rlaF -f {pattern} {THIN_DIR} 2>/dev/null; true")
        thin_dir = _lines(replica, f"stat -c '%a %U' {THIN_DIR} 2>/dev/null; true")
    finally:
        replica.ssh(f"rm -f {pattern}", timeout=30)
    calls = replica.calls_since(0)
    modes = {**backups(replica, ENV_FILE), **backups(replica, "/etc/redis/redis.conf")}
    noauth = replica.ssh("redis-cli -h 127.0.0.1 ping 2>&1; true", timeout=30).stdout.strip()
    return {
        "password_length": len(password),
        "redis_requires_it": noauth.startswith("NOAUTH"),
        "salt_ssh_runs": sum(ssh.runs for ssh in lab.salt_runs),
        "salt_ssh_output_or_log_leaks": [ssh.dir.name for ssh in lab.salt_runs if ssh.leaks()],
        "guest_log_files_with_it": log_files,
        "journal_lines_with_it": int(journal[-1]) if journal else 0,
        "argv": {
            "samples": dict(sampler.rounds),
            "distinct_guest": len(sampler.guest),
            "distinct_host": len(sampler.host),
            "wrapped_calls": len(calls),
            "hits": {
                "wrapped calls": sum(password in argv for _, _, argv in calls),
                **sampler.found(password),
            },
        },
        "world_readable": {
            "scope": "the whole guest" if not scope else "files written during the runs",
            "files_checked": int(world_checked[-1]) if world_checked else 0,
            "files_with_it": world,
        },
        "salt_ssh_dir_on_guest": {
            "mode_owner": thin_dir[0] if thin_dir else None,
            "files_with_it": thin_files,
        },
        "backups": modes,
        "backups_0600": bool(modes) and all(mode == "600" for mode in modes.values()),
    }


def run_one_go(lab):
    """Fidelity of the fix in one go from "before": test=True with the restart flag, then the
    run."""
    lab.fresh("one go")
    ssh = lab.salt("one-go")
    lab.say(
        f"[one go] salt-ssh {ROSTER_ID} state.apply serverfix {RESTART_FLAG} test=True, "
        "then for real"
    )
    preview = lab.apply(ssh, RESTART_FLAG, "test=True")
    applied = lab.apply(ssh, RESTART_FLAG)
    entry = fidelity_entry(preview, applied)
    entry["apply_seconds"] = applied["seconds"]
    return entry


def run_half_fixed(lab):
    """Fidelity from a half-fixed replica: Redis installed (serverfix.redis), the .env partly done
    (two keys right, one wrong, no final newline kept), prisma-studio deleted but still saved, no
    swap."""
    lab.fresh("half-fixed")
    ssh = lab.salt("half-fixed")
    lab.say(
        f"[half-fixed] salt-ssh {ROSTER_ID} state.apply serverfix.redis; .env partly done; "
        "pm2 delete prisma-studio (not saved)"
    )
    rc, data, _, output = ssh.attempt("state.apply", "serverfix.redis")
    prep = state_run(data)
    if rc != 0 or not prep or prep.failed:
        return {
            "error": "preparing the half-fixed replica failed: " + first_error(data, output),
            "mismatches": None,
        }
    lab.replica.ssh(
        "printf '\\nREDIS_HOST=127.0.0.1\\nREDIS_PORT=6379\\nQUEUE_CONCURRENCY=3' "
        f">> {ENV_FILE} && "
        "pm2 delete prisma-studio >/dev/null",
        timeout=60,
    )
    lab.say(
        f"[half-fixed] salt-ssh {ROSTER_ID} state.apply serverfix {RESTART_FLAG} test=True, "
        "then for real"
    )
    preview = lab.apply(ssh, RESTART_FLAG, "test=True")
    applied = lab.apply(ssh, RESTART_FLAG)
    entry = fidelity_entry(preview, applied)
    entry["prepared"] = [
        "serverfix.redis applied",
        ".env: REDIS_HOST, REDIS_PORT right, QUEUE_CONCURRENCY=3",
        "prisma-studio deleted, still in dump.pm2",
        "no swap",
    ]
    return entry
