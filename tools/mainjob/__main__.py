"""
``python -m tools.mainjob``: boot the replica, run the eight steps in order (a later step needs the
earlier ones, so the first failure ends the run), print a progress line per step and a summary,
write the figures to <replica dir>/last-run.json, tear the replica down (unless ``--keep``).
Exit 0 when every step passed, 1 when one failed, 2 on bad usage.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import tools.mainjob
from tests.support.paths import REPO
from tests.support.replica import VENV_BIN, Replica, SaltSsh
from tools.mainjob.steps import PILLAR, STEPS, Job, StepFailed
from tools.mainjob.summary import REPORT_FILE, summary_lines, write_report

MASTER_MINION_TESTS = "tests/e2e/test_replica_master_minion.py"


def parse_args(argv):
    """The command line's options (``--help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.mainjob",
        description=tools.mainjob.__doc__.strip().split("\n\n", 1)[0],
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the replica running (./scripts/replica.sh ssh CMD, ./scripts/replica.sh down)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=10,
        metavar="N",
        help="POST /reservations per latency measurement (default 10)",
    )
    parser.add_argument(
        "--master-minion",
        action="store_true",
        help="also apply the formula through a real salt-master + salt-minion in a fresh replica",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout (progress and summary go to stderr)",
    )
    return parser.parse_args(argv)


def run_steps(job):
    """Every step in order; the first failure ends the run. ``[(key, status, seconds, error)]``."""
    results, failed = [], None
    for number, (key, title, func) in enumerate(STEPS, 1):
        if failed:
            results.append((key, "skipped", 0.0, f"an earlier step failed ({failed})"))
            continue
        job.say(f"step {number}/{len(STEPS)}: {title.split(' ', 1)[1]}")
        started = time.monotonic()
        try:
            func(job)
            status, error = "ok", ""
        except StepFailed as exc:
            status, error = "failed", str(exc)
        except Exception as exc:  # pylint: disable=broad-except  # a crash is a failed step too
            status, error = "failed", "".join(traceback.format_exception(exc)).strip()
        seconds = time.monotonic() - started
        if status == "failed":
            failed = key
            job.entry(key)["error"] = error
        job.say(
            f"step {number}/{len(STEPS)}: {status} ({seconds:.1f} s)"
            + (f": {error[:2000]}" if error else "")
        )
        results.append((key, status, round(seconds, 1), error))
    return results


def run_master_minion(keep, say):
    """The master/minion check (its own fresh replica) through its pytest module; its summary."""
    say(f"salt-master + salt-minion in a fresh replica ({MASTER_MINION_TESTS})")
    with tempfile.NamedTemporaryFile(prefix="serverfix-mm-", suffix=".json") as out:
        env = dict(
            os.environ, SERVERFIX_REPLICA_KEEP="1" if keep else "0", SERVERFIX_E2E_REPORT=out.name
        )
        proc = subprocess.run(
            [
                str(VENV_BIN / "python"),
                "-m",
                "pytest",
                "--run-destructive",
                "-p",
                "no:cacheprovider",
                "-q",
                "--no-header",
                MASTER_MINION_TESTS,
            ],
            cwd=REPO,
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )
        try:
            entry = (
                json.loads(out.read() or "{}").get("steps", {}).get("master_minion", {"lines": []})
            )
        except ValueError:
            entry = {"lines": []}
    tail = proc.stdout.strip().splitlines()[-1:] or ["no output"]
    entry["lines"].append(f"pytest {MASTER_MINION_TESTS}: {tail[0]}")
    status = "ok" if proc.returncode == 0 else "failed"
    if status == "failed":
        entry["error"] = proc.stdout[-4000:] + proc.stderr[-2000:]
    say(f"master/minion: {status}")
    return entry, status


def main(argv=None):
    """Run the main job's steps, print the summary, write the report; the exit code."""
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout

    def say(text):
        print(f"    [{time.strftime('%H:%M:%S')}] {text}", file=out, flush=True)

    if os.geteuid() != 0:
        print(
            "python -m tools.mainjob: run as root (systemd-nspawn, loop mounts, nftables)",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    report = {"steps": {}}
    replica = Replica()
    try:
        say("booting the replica (builds and caches the image first if needed: ~2-3 min once)")
        try:
            seconds = replica.up()
        except AssertionError as exc:  # replica.sh failed: its output is in the message
            say(f"the replica did not boot: {exc}")
            results = [("boot", "failed", 0.0, str(exc))]
        else:
            report["replica"] = {"up_seconds": round(seconds, 1)}
            say(f"replica up at root@{replica.ip} in {seconds:.1f} s")
            with tempfile.TemporaryDirectory(prefix="serverfix-mainjob-") as workdir:
                job = Job(
                    replica,
                    SaltSsh(workdir, replica, PILLAR),
                    requests=args.requests,
                    say=say,
                    report=report,
                )
                results = run_steps(job)
    finally:
        if args.keep:
            say("kept running (--keep): ./scripts/replica.sh ssh ...  |  ./scripts/replica.sh down")
        else:
            replica.down()
    if args.master_minion:  # its own fresh replica, as when pytest ran both modules
        report["steps"]["master_minion"], status = run_master_minion(args.keep, say)
        results.append(
            ("master_minion", status, 0.0, report["steps"]["master_minion"].get("error", ""))
        )
    ok = all(status == "ok" for _, status, _, _ in results)
    report["results"] = [
        {"step": key, "status": status, "seconds": seconds, "error": error}
        for key, status, seconds, error in results
    ]
    report["ok"] = ok
    report["seconds"] = round(time.monotonic() - started)
    path = write_report(report, REPORT_FILE)
    print("\nserverfix on the replica: summary", file=out)
    for line in summary_lines(report):
        print(line, file=out)
    print(" ".join(f"{key} {status}" for key, status, _, _ in results), file=out)
    print(
        f"{'all steps passed' if ok else 'FAILED'} in {report['seconds']} s (all figures: {path})",
        file=out,
    )
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
