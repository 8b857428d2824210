"""Comparing runs: preview fidelity, idempotence and run summaries from state returns; medians."""

import statistics

from tools.proof.lab import first_error


def fidelity(preview, applied):
    """
    Per state id: "would change" = result None with changes in ``test=True``; "did change" = changes
    in the real run. Mismatches both ways: predicted but not changed, changed but not predicted.
    """
    rows = []
    pre = {s["__id__"]: s for s in preview.states}
    real = {s["__id__"]: s for s in applied.states}
    for sid in list(dict.fromkeys(list(pre) + list(real))):
        p, r = pre.get(sid, {}), real.get(sid, {})
        predicted = p.get("result") is None and bool(p.get("changes")) if p else False
        changed = bool(r.get("changes")) if r else False
        rows.append(
            {
                "id": sid,
                "predicted": predicted,
                "changed": changed,
                "test_result": p.get("result"),
                "result": r.get("result"),
                "in_preview": bool(p),
                "in_run": bool(r),
            }
        )
    not_done = [r["id"] for r in rows if r["predicted"] and not r["changed"]]
    unannounced = [r["id"] for r in rows if r["changed"] and not r["predicted"]]
    missing = [r["id"] for r in rows if not (r["in_preview"] and r["in_run"])]
    return {
        "states": len(rows),
        "predicted": sum(r["predicted"] for r in rows),
        "changed": sum(r["changed"] for r in rows),
        "predicted_not_changed": not_done,
        "changed_not_predicted": unannounced,
        "missing_in_one_run": missing,
        "mismatches": len(not_done) + len(unannounced) + len(missing),
        "failed": [s["__id__"] for s in applied.failed],
        "rows": rows,
    }


def core_state(snapshot):
    """What "nothing changed" compares (tests/support/guest.py's snapshot, without timings and
    health)."""
    keys = (
        "files",
        "dirs",
        "redis_installed",
        "redis_active",
        "swap_active",
        "fstab_swap",
        "sysctl",
        "pm2_saved",
    )
    out = {k: snapshot.get(k) for k in keys}
    out["pm2"] = [
        {k: p.get(k) for k in ("name", "pid", "status", "restart_time")}
        for p in snapshot.get("pm2") or []
    ]
    return out


def differences(before, after):
    """The keys whose values differ between two core states."""
    return sorted(k for k in before if before[k] != after.get(k))


def median(values):
    """The median, rounded to 0.01 (None for no values)."""
    return round(statistics.median(values), 2) if values else None


def run_summary(run):
    """rc, seconds, calls and state counts of one measured run."""
    states = run["run"]
    return {
        "rc": run["rc"],
        "seconds": run["seconds"],
        "calls": run["calls"],
        "states": len(states.states) if states else None,
        "changed": len(states.changed) if states else None,
        "failed": [s["__id__"] for s in states.failed] if states else None,
    }


def fidelity_entry(preview, applied):
    """fidelity() of a preview and its run, or the error when one returned no states."""
    if not preview["run"] or not applied["run"]:
        return {
            "error": first_error(preview["data"] if not preview["run"] else applied["data"]),
            "mismatches": None,
        }
    entry = fidelity(preview["run"], applied["run"])
    entry.update(preview_rc=preview["rc"], apply_rc=applied["rc"], preview_calls=preview["calls"])
    return entry


def idempotence_entry(*reruns):
    """Changes and mutating calls of the re-applies, per run and summed."""
    entry = {"runs": []}
    for rerun in reruns:
        run = rerun["run"]
        entry["runs"].append(
            {
                "changes": len(run.changed) if run else None,
                "states": len(run.states) if run else None,
                "failed": [s["__id__"] for s in run.failed] if run else None,
                "rc": rerun["rc"],
                "mutating_calls": {g: c["mutating"] for g, c in rerun["calls"].items()},
                "mutating_list": [m for c in rerun["calls"].values() for m in c["mutating_calls"]],
                "pm2_calls": rerun["calls"]["pm2"]["total"],
                "pkg_calls": rerun["calls"]["package manager"]["total"],
                "pkg_commands": rerun["calls"]["package manager"]["commands"],
            }
        )
    entry["changes"] = (
        sum(r["changes"] or 0 for r in entry["runs"])
        if all(r["changes"] is not None for r in entry["runs"])
        else None
    )
    entry["mutating_calls"] = sum(len(r["mutating_list"]) for r in entry["runs"])
    return entry
