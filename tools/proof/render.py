"""The terminal table of a report: section, measure, value, goal, verdict."""

from tools.proof.lab import SPEED_GOAL
from tools.proof.stats import median


def _s(seconds):
    return "-" if seconds is None else f"{seconds:.1f} s"


def _fidelity_rows(report, row):
    """Preview fidelity: mismatches per comparison, the writes of test=True."""
    for key, label in (
        ("before", "before -> apply"),
        ("restart", "restart step (after that apply)"),
        ("one_go", "before -> apply with the flag"),
        ("half_fixed", "half-fixed, with the flag"),
    ):
        e = report.get("fidelity", {}).get(key)
        if not e:
            continue
        if e.get("mismatches") is None:
            row("preview fidelity", label, "no comparison: " + e.get("error", "")[:80], 0, False)
            continue
        detail = f"{e['states']} states, {e['predicted']} predicted, {e['changed']} changed"
        wrong = e["predicted_not_changed"] + e["changed_not_predicted"] + e["missing_in_one_run"]
        row(
            "preview fidelity",
            label,
            f"{e['mismatches']} mismatches ({detail})" + (f": {', '.join(wrong)}" if wrong else ""),
            0,
            e["mismatches"] == 0 and not e["failed"],
        )
    before = report.get("fidelity", {}).get("before") or {}
    if before.get("preview_calls"):
        writes = [m for c in before["preview_calls"].values() for m in c["mutating_calls"]]
        row(
            "preview fidelity",
            "calls of test=True that write (before)",
            "; ".join(writes) or "none",
            "",
            None,
        )


def _idempotence_rows(report, row):
    """Idempotence: changes and mutating calls of the re-applies."""
    idem = report.get("idempotence")
    if idem:
        for run, label in zip(idem["runs"], ("re-apply", "re-apply, restart flag"), strict=False):
            row(
                "idempotence",
                label,
                f"{run['changes']} changes of {run['states']} states; mutating calls: "
                f"{sum(run['mutating_calls'].values())} (pm2 calls {run['pm2_calls']}, "
                f"package manager {run['pkg_calls']}: {', '.join(run['pkg_commands']) or '-'})",
                "0 / 0",
                run["changes"] == 0 and not run["mutating_list"],
            )


def _fault_rows(report, row):
    """The fault matrix: each case, its outcome and first problem."""
    for f in report.get("faults", []):
        # a refusal's first problem (the line after "Nothing was changed: fix these first ...")
        problem = next(
            (line.strip(" -") for line in f["error"].splitlines()[1:] if line.strip()), f["error"]
        )
        problem = " ".join(problem.split())
        shown = (
            f": {problem}"
            if problem and (not f["ok"] or f["outcome"].startswith("refused"))
            else ""
        )
        row("fault matrix", f["id"], f"{f['outcome']}{shown}", "clear, intact", f["ok"])


def _secret_rows(report, row):
    """Secrets: the password's scans, and issue 12's extra values."""
    sec = report.get("secrets")
    if sec:
        a = sec["argv"]
        row(
            "secrets",
            "salt-ssh output + logs",
            f"{len(sec['salt_ssh_output_or_log_leaks'])} of {sec['salt_ssh_runs']} runs",
            0,
            not sec["salt_ssh_output_or_log_leaks"],
        )
        row(
            "secrets",
            "guest logs (/var/log, journal, pm2, salt)",
            f"{len(sec['guest_log_files_with_it'])} files, "
            f"{sec['journal_lines_with_it']} journal lines",
            0,
            not sec["guest_log_files_with_it"] and not sec["journal_lines_with_it"],
        )
        row(
            "secrets",
            "process argv",
            f"{sum(a['hits'].values())} (ps samples: guest {a['samples']['guest']}, host "
            f"{a['samples']['host']}; {a['wrapped_calls']} wrapped calls)",
            0,
            not sum(a["hits"].values()),
        )
        w = sec["world_readable"]
        row(
            "secrets",
            "world-readable files",
            f"{len(w['files_with_it'])} of {w['files_checked']} ({w['scope']})",
            0,
            not w["files_with_it"],
        )
        row(
            "secrets",
            "Redis without the password",
            "NOAUTH (refused)" if sec["redis_requires_it"] else "answers",
            "refused",
            sec["redis_requires_it"],
        )
        row(
            "secrets",
            "backups (.env, redis.conf)",
            ", ".join(sorted(set(sec["backups"].values()))) or "none",
            "0600",
            sec["backups_0600"],
        )
    extra = report.get("secrets_issue12")
    if extra:
        row(
            "secrets",
            "issue 12: extra values, URL credentials, hand-set password",
            f"{extra['hits']} hits ({extra['values']} values; {extra['salt_ssh_runs']} salt-ssh "
            f"runs: output, logs, job cache; guests: logs, journal, salt-ssh dir)",
            0,
            extra["hits"] == 0,
        )


def _speed_rows(report, row):
    """Speed: medians, ratios, pm2 invocations."""
    sp = report.get("speed")
    if sp:
        med = sp["median"]
        n = f"median of {sp['reps']}"
        row(
            "speed",
            "no-op re-apply vs one-state SLS",
            f"{_s(med['noop'])} vs {_s(med['baseline'])} = {sp['ratio_noop']}x ({n})",
            f"<= {SPEED_GOAL}x",
            sp["ratio_noop"] <= SPEED_GOAL,
        )
        row(
            "speed",
            "test=True vs one-state SLS test=True",
            f"{_s(med['preview'])} vs {_s(med['baseline_preview'])} = {sp['ratio_preview']}x ({n})",
            f"<= {SPEED_GOAL}x",
            sp["ratio_preview"] <= SPEED_GOAL,
        )
        full = sp["full_apply"]
        row(
            "speed",
            "full apply from before, after its preview (installs Redis, 2G swap)",
            f"{_s(median(full))} (median of {len(full)})"
            if len(full) > 1
            else _s(full[0] if full else None),
        )
        row("speed", "apply with the restart flag (restart + ready lines)", _s(sp["apply_restart"]))
        row(
            "speed",
            "test=True from before / first contact (thin deploy)",
            f"{_s(sp.get('preview_before'))} / {_s(sp.get('first_contact'))}",
        )
        row(
            "speed",
            "serverfix.diagnose / serverfix.verify",
            f"{_s(med['diagnose'])} / {_s(med['verify'])} "
            f"(median of {len(sp['seconds']['diagnose'])} / {len(sp['seconds']['verify'])})",
        )
        pc = sp["pm2_calls"]
        row(
            "speed",
            "pm2 invocations per run",
            f"diagnose {pc['diagnose']}, verify {pc['verify']}, test=True "
            f"{pc['preview']}, no-op {pc['noop']}, full apply {pc['apply']}, "
            f"restart {pc['apply_restart']}",
        )


def table(report):
    """The terminal table: section, measure, value, goal, verdict."""
    rows = []

    def row(section, measure, value, target="", ok=None):
        rows.append(
            (
                section,
                measure,
                str(value),
                str(target),
                "" if ok is None else ("ok" if ok else "MISSED"),
            )
        )

    for part in (_fidelity_rows, _idempotence_rows, _fault_rows, _secret_rows, _speed_rows):
        part(report, row)
    m = report["meta"]
    widths = [max(len(r[i]) for r in rows + [("", "", "", "goal", "")]) for i in range(5)]
    widths[2] = min(widths[2], 92)
    lines = [
        f"serverfix proof report: mode {m['mode']}, commit {m['commit']}, {m['salt']}, "
        f"{m['cpus']} CPUs, {m['transport']}"
    ]
    head = ("section", "measure", "value", "goal", "")
    for r in [head] + rows:
        value = r[2] if len(r[2]) <= widths[2] else r[2][: widths[2] - 1] + "…"
        cells = (r[0], r[1], value, r[3])
        padded = "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths[:4], strict=True))
        lines.append(f"{padded}  {r[4]}".rstrip())
    missed = [g["name"] for g in report.get("goals", []) if not g["ok"]]
    lines.append("all goals met" if not missed else "goals missed: " + "; ".join(missed))
    return lines
