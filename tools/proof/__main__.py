"""``python -m tools.proof``: the whole report, a table on the terminal and a JSON file."""

import argparse
import sys
import tempfile
import time

import tools.proof
from tools.proof.lab import ARTIFACTS, MODES, Lab
from tools.proof.render import table
from tools.proof.report import parse_only, run_all, write


def main(argv=None):
    """Parse ``argv``, run the report (or the ``--only`` cases), print the table; 1 if a goal is
    missed."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.proof", description=tools.proof.__doc__.split("\n\n", maxsplit=1)[0]
    )
    parser.add_argument(
        "--mode",
        choices=sorted(MODES),
        default="full",
        help="full: 7 repetitions, 3 full applies, every pillar case (default); ci: the CI subset",
    )
    parser.add_argument("--reps", type=int, help="speed repetitions (overrides the mode's)")
    parser.add_argument(
        "--out", default=str(ARTIFACTS / "proof-report.json"), help="the JSON report"
    )
    parser.add_argument(
        "--only",
        metavar="CASES",
        help="just these fault cases: issue12 (every case of issue 12) or issue12:1,14 (by item)",
    )
    args = parser.parse_args(argv)
    if args.only:
        try:
            parse_only(args.only)
        except ValueError as exc:
            parser.error(str(exc))
    started = time.monotonic()

    def say(text):
        print(f"    [{time.strftime('%H:%M:%S')}] {text}", flush=True)

    with tempfile.TemporaryDirectory(prefix="serverfix-proof-") as workdir:
        lab = Lab(workdir, args.mode, say)
        if args.reps:
            lab.opts = dict(lab.opts, reps=args.reps)
            lab.report["meta"]["opts"] = lab.opts
        try:
            report = run_all(lab, args.only)
        finally:
            lab.close()
    report["meta"]["seconds"] = round(time.monotonic() - started)
    path = write(report, args.out)
    print()
    print("\n".join(table(report)))
    print(
        f"(all figures: {path}; {report['meta']['seconds']} s, "
        f"{report['meta']['replica_boots']} replica boots)"
    )
    return 0 if all(g["ok"] for g in report["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
