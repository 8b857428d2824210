"""``python -m tools.fleet``: the scaling table and the no-op ratios (tools/fleet/__init__.py)."""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import tools.fleet
from tests.support.fleet import Fleet, rollout, rollout_summary
from tests.support.replica import HEALTH_URL_IN_GUEST
from tests.support.salt_master import HostMaster
from tools.proof.lab import ARTIFACTS, BASELINE_SLS, ProofSaltSsh, baseline_root
from tools.proof.stats import median


def host_pillar(minion_id):
    """The operator's pillar, and each host its own swap path (one kernel for all replicas)."""
    return {
        "serverfix": {
            "verify": {"url": HEALTH_URL_IN_GUEST},
            "swap": {"file": f"/swapfile-{minion_id}"},
        }
    }


def fleet_master(workdir, fleet, say):
    """A master for ``fleet`` (baseline SLS beside the formula), minions joined and synced."""
    master = HostMaster(
        Path(workdir) / "master",
        fleet.master_ip,
        {i: host_pillar(i) for i in fleet.ids},
        extra_roots=[baseline_root(workdir)],
    )
    master.start()
    try:
        fleet.join(master)
    except BaseException:
        master.stop()  # the caller stops it only once this returned
        raise
    say(f"master on {fleet.master_ip}, minions {', '.join(fleet.ids)} joined")
    return master


def scaling_row(size, batch, say):
    """A fresh fleet of ``size``, the whole rollout with ``batch`` hosts per batch: its figures."""
    fleet = Fleet(size, say)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as workdir:
        try:
            up = fleet.up()
            master = fleet_master(workdir, fleet, say)
            try:
                say(f"N={size} batch={batch}: rollout")
                rc, data, seconds = rollout(
                    master, target="hetzner-*", batch=size if batch == "all" else 1, restart=True
                )
                summary, text = rollout_summary(data)
            finally:
                master.stop()
        finally:
            fleet.down()
    fixed = sum(s["result"] == "fixed" for s in summary.values())
    say(f"N={size} batch={batch}: {seconds:.1f} s, {fixed}/{size} fixed (rc {rc})")
    return {
        "n": size,
        "batch": batch,
        "seconds": round(seconds, 1),
        "fixed": fixed,
        "rc": rc,
        "up_seconds": round(up, 1),
        "summary": text,
    }


def noop_ratios(reps, say):
    """One fixed host: no-op serverfix vs the one-state SLS over master/minion and salt-ssh."""
    fleet = Fleet(1, say)
    samples = {}
    with tempfile.TemporaryDirectory(prefix="fleet-noop-") as workdir:
        try:
            fleet.up()
            master = fleet_master(workdir, fleet, say)
            member = fleet.members[0]
            ssh = ProofSaltSsh(Path(workdir) / "ssh", member, host_pillar(member.name)["serverfix"])
            try:
                rollout(
                    master, target=member.name, restart=True
                )  # fixed: the runs below are no-ops
                ssh.attempt("state.apply", "serverfix")  # salt-ssh's first contact (thin shipped)
                kinds = {
                    "mm_noop": ("master", ("serverfix",)),
                    "mm_baseline": ("master", (BASELINE_SLS,)),
                    "mm_preview": ("master", ("serverfix", "test=True")),
                    "mm_baseline_preview": ("master", (BASELINE_SLS, "test=True")),
                    "ssh_noop": ("ssh", ("serverfix",)),
                    "ssh_baseline": ("ssh", (BASELINE_SLS,)),
                    "ssh_preview": ("ssh", ("serverfix", "test=True")),
                    "ssh_baseline_preview": ("ssh", (BASELINE_SLS, "test=True")),
                }
                for rep in range(reps + 1):  # the first round warms caches and is dropped
                    say(f"no-op round {rep + 1}/{reps + 1}")
                    for kind, (transport, args) in kinds.items():
                        started = time.monotonic()
                        if transport == "master":
                            rc, data = master.salt(member.name, "state.apply", *args)
                            states = data[member.name]
                        else:
                            rc, states, _, _ = ssh.attempt("state.apply", *args)
                        seconds = time.monotonic() - started
                        changed = [s for s in (states or {}).values() if s.get("changes")]
                        if rc != 0 or changed:
                            raise RuntimeError(f"{kind}: rc {rc}, changed {changed}")
                        if rep:
                            samples.setdefault(kind, []).append(round(seconds, 2))
                            # the states' own time (Salt's `duration`): the rest is rendering
                            # and transport
                            own = sum(float(s.get("duration") or 0) for s in states.values())
                            samples.setdefault(kind + "_states", []).append(round(own / 1000, 2))
            finally:
                master.stop()
        finally:
            fleet.down()
    med = {k: median(v) for k, v in samples.items()}
    ratios = {
        f"{t}_{kind}": round(
            med[f"{t}_{kind}"] / med[f"{t}_baseline" + ("_preview" if kind == "preview" else "")], 2
        )
        for t in ("mm", "ssh")
        for kind in ("noop", "preview")
    }
    return {"reps": reps, "seconds": samples, "median": med, "ratio": ratios}


def table_lines(report):
    """The report as the terminal shows it: the scaling table, then the no-op ratios."""
    lines = [
        "",
        'Rollout from "before", restart consented (fresh replicas per row)',
        f"{'N':>3} {'batch':>6} {'wall s':>8} {'x N=1':>7} {'fixed':>6}",
    ]
    first = {r["batch"]: r["seconds"] for r in report["scaling"] if r["n"] == 1}
    for row in report["scaling"]:
        base = first.get(row["batch"]) or first.get("all")
        ratio = f"{row['seconds'] / base:.2f}" if base else "-"
        fixed = f"{row['fixed']}/{row['n']}"
        lines.append(
            f"{row['n']:>3} {row['batch']:>6} {row['seconds']:>8.1f} {ratio:>7} {fixed:>6}"
        )
    noop = report.get("noop")
    if noop:
        med, ratio = noop["median"], noop["ratio"]
        lines += ["", f"No-op vs one-state SLS (median of {noop['reps']})"]
        for t, name in (("mm", "master/minion"), ("ssh", "salt-ssh")):
            noop_s, base_s = med[t + "_noop"], med[t + "_baseline"]
            prev_s, base_prev_s = med[t + "_preview"], med[t + "_baseline_preview"]
            lines.append(
                f"  {name:<14} no-op {noop_s:.2f} s vs {base_s:.2f} s = {ratio[t + '_noop']}x; "
                f"test=True {prev_s:.2f} s vs {base_prev_s:.2f} s = {ratio[t + '_preview']}x"
            )
            if t + "_noop_states" in med:
                lines.append(
                    f"  {'':<14} states' own time in the no-op {med[t + '_noop_states']:.2f} s, "
                    f"in the one-state SLS {med[t + '_baseline_states']:.2f} s"
                )
    return lines


def main(argv=None):
    """Run the rows and the no-op part, print the tables; 1 when a rollout left a host unfixed."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.fleet", description=tools.fleet.__doc__.split("\n\n")[1]
    )
    parser.add_argument(
        "--sizes",
        default="1,2,3",
        help="fleet sizes, comma-separated (default 1,2,3; '': the no-op part only)",
    )
    parser.add_argument(
        "--reps", type=int, default=5, help="no-op repetitions (0: skip the no-op part)"
    )
    parser.add_argument("--out", default=str(ARTIFACTS / "fleet-report.json"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]  # "": the no-op part only

    def say(text):
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    report = {"sizes": sizes, "scaling": []}
    for size in sizes:
        for batch in ("all", "1") if size > 1 else ("all",):
            report["scaling"].append(scaling_row(size, batch, say))
    if args.reps:
        report["noop"] = noop_ratios(args.reps, say)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    print("\n".join(table_lines(report) + [f"(figures: {args.out})"]))
    return 0 if all(r["fixed"] == r["n"] for r in report["scaling"]) else 1


if __name__ == "__main__":
    sys.exit(main())
