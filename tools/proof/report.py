"""The whole report: record each section into the lab's report, judge the goals, write the JSON."""

import json
from pathlib import Path

from tools.proof import issue12
from tools.proof.faults import FAULTS_ON_FRESH_REPLICAS
from tools.proof.lab import SPEED_GOAL, job_cache_files
from tools.proof.preflight_faults import faults_refused_in_preflight
from tools.proof.scenarios import more_full_applies, run_half_fixed, run_main, run_one_go


def record_main(lab):
    """run_main, its sections into the lab's report."""
    main = run_main(lab)
    lab.report.setdefault("fidelity", {}).update(main["fidelity"])
    lab.report.update(
        idempotence=main["idempotence"],
        speed=main["speed"],
        secrets=main["secrets"],
        runs=main["runs"],
    )
    return main


def record_one_go(lab):
    """run_one_go, into the report's fidelity section."""
    entry = lab.report.setdefault("fidelity", {})["one_go"] = run_one_go(lab)
    return entry


def record_half_fixed(lab):
    """run_half_fixed, into the report's fidelity section."""
    entry = lab.report.setdefault("fidelity", {})["half_fixed"] = run_half_fixed(lab)
    return entry


def record_faults(lab, scenario):
    """One fault scenario (a function of FAULTS_ON_FRESH_REPLICAS, faults_refused_in_preflight
    or issue12.cases()), its entries into the report."""
    result = scenario(lab)
    entries = result if isinstance(result, list) else [result]
    lab.report.setdefault("faults", []).extend(entries)
    return entries


def record_full_applies(lab):
    """More full applies on fresh replicas, up to the mode's count."""
    extra = lab.opts["full_apply_reps"] - len(lab.report["speed"]["full_apply"])
    if extra > 0:
        lab.report["speed"]["full_apply"] += more_full_applies(lab, extra)


def finish(lab):
    """The secrets of every salt-ssh run of the lab (fault runs included) and the verdicts."""
    report = lab.report
    if "secrets" in report:
        report["secrets"]["salt_ssh_runs"] = sum(ssh.runs for ssh in lab.salt_runs)
        report["secrets"]["salt_ssh_output_or_log_leaks"] = [
            ssh.dir.name for ssh in lab.salt_runs if ssh.leaks()
        ]
    if lab.extra_secrets:
        report["secrets_issue12"] = extra_secret_scan(lab)
    report["meta"]["replica_boots"] = lab.boots
    report["goals"] = goals(report)
    return report


def extra_secret_scan(lab):
    """issue 12: every value of ``lab.extra_secrets`` (dotenv:extra values, URL credentials, a
    hand-set requirepass) searched in every output of every salt-ssh run of the lab (stdout,
    stderr, logs, job cache), plus the hits the cases found in their guests."""
    leaks = {ssh.dir.name: ssh.leaks(lab.extra_secrets, job_cache=False) for ssh in lab.salt_runs}
    # the job cache is shared by the lab's runs: searched once
    cached = [
        p.read_bytes().decode("utf-8", "replace")
        for cachedir in {ssh.cachedir for ssh in lab.salt_runs}
        for p in job_cache_files(cachedir)
    ]
    leaks["job cache"] = sorted(
        {v[:4] + "…" for v in lab.extra_secrets if any(v in t for t in cached)}
    )
    leaks = {name: found for name, found in leaks.items() if found}
    return {
        "values": len(lab.extra_secrets),
        "salt_ssh_runs": sum(ssh.runs for ssh in lab.salt_runs),
        "salt_ssh_leaks": leaks,
        "guest_hits": lab.extra_guest_hits,
        "hits": sum(len(found) for found in leaks.values()) + lab.extra_guest_hits,
    }


def run_all(lab, only=None):
    """Every scenario in turn (the issue 12 cases in the full mode only); the report gets each
    section as soon as it is measured. ``only``: ``"issue12"`` or ``"issue12:1,14"`` runs just
    those cases of issue 12."""
    if only:
        items = parse_only(only)
        for scenario in issue12.cases(items):
            record_faults(lab, scenario)
        return finish(lab)
    record_main(lab)
    record_one_go(lab)
    record_half_fixed(lab)
    scenarios = [faults_refused_in_preflight] + FAULTS_ON_FRESH_REPLICAS
    if lab.mode == "full":
        scenarios += issue12.cases()
    for scenario in scenarios:
        record_faults(lab, scenario)
    record_full_applies(lab)
    return finish(lab)


def parse_only(only):
    """``"issue12"`` -> None (every item), ``"issue12:1,14"`` -> {"1", "14"}; ValueError
    otherwise."""
    name, _, items = only.partition(":")
    if name != "issue12":
        raise ValueError(f"--only {only!r}: issue12 or issue12:<items> (e.g. issue12:1,14)")
    if not items:
        return None
    picked = {item.strip() for item in items.split(",") if item.strip()}
    unknown = sorted(picked - set(issue12.ISSUE12_CASES))
    if unknown:
        raise ValueError(
            f"--only {only!r}: no case for item {', '.join(unknown)} "
            f"(cases: {', '.join(issue12.ISSUE12_CASES)})"
        )
    return picked


def goals(report):
    """``[{name, value, goal, ok}]``: what the issue asks, judged from the report."""
    out = []

    def goal(name, value, target, ok):
        out.append({"name": name, "value": value, "goal": target, "ok": bool(ok)})

    for key, label in (
        ("before", "preview fidelity, before"),
        ("restart", "preview fidelity, restart step"),
        ("one_go", "preview fidelity, one go with the flag"),
        ("half_fixed", "preview fidelity, half-fixed"),
    ):
        entry = report.get("fidelity", {}).get(key)
        if entry is not None:
            goal(
                label,
                entry.get("mismatches"),
                0,
                entry.get("mismatches") == 0 and not entry.get("failed"),
            )
    idem = report.get("idempotence")
    if idem:
        goal("re-apply changes", idem["changes"], 0, idem["changes"] == 0)
        goal("re-apply mutating calls", idem["mutating_calls"], 0, idem["mutating_calls"] == 0)
    if report.get("faults") is not None:
        passed = sum(f["ok"] for f in report["faults"])
        goal(
            "faults handled (clear error, nothing lost)",
            f"{passed}/{len(report['faults'])}",
            "all",
            passed == len(report["faults"]),
        )
    sec = report.get("secrets")
    if sec:
        hits = (
            len(sec["salt_ssh_output_or_log_leaks"])
            + len(sec["guest_log_files_with_it"])
            + sec["journal_lines_with_it"]
            + sum(sec["argv"]["hits"].values())
            + len(sec["world_readable"]["files_with_it"])
        )
        goal("password found (output, logs, argv, world-readable)", hits, 0, hits == 0)
        goal(
            "Redis refuses a client without the password",
            sec["redis_requires_it"],
            True,
            sec["redis_requires_it"],
        )
        goal(
            "backups 0600",
            f"{sum(m == '600' for m in sec['backups'].values())}/{len(sec['backups'])}",
            "all",
            sec["backups_0600"],
        )
    extra = report.get("secrets_issue12")
    if extra:
        goal(
            "extra values and URL credentials found (every output)",
            extra["hits"],
            0,
            extra["hits"] == 0,
        )
    speed_ = report.get("speed")
    if speed_:
        goal(
            "no-op re-apply / one-state SLS",
            speed_["ratio_noop"],
            f"<= {SPEED_GOAL}",
            speed_["ratio_noop"] <= SPEED_GOAL,
        )
        goal(
            "test=True / one-state SLS test=True",
            speed_["ratio_preview"],
            f"<= {SPEED_GOAL}",
            speed_["ratio_preview"] <= SPEED_GOAL,
        )
    return out


def write(report, path):
    """The report as JSON at ``path`` (its directory made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    return path
