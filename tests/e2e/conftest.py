"""
End-to-end layer: the replica host (scripts/replica.sh), a Debian 12 with systemd booted under
systemd-nspawn in its own network namespace, in the runbook's "before" state; the formula is
applied to it over salt-ssh (roster entry ``hetzner``) and once through a real salt-master and a
salt-minion inside it.

- One replica at a time (replica.sh holds a lock); each test module boots its own and tears it
  down, unless SERVERFIX_REPLICA_KEEP=1 (``./scripts/run-replica.sh --keep``).
- Steps in a module build on each other: after a failed step the later ones are skipped.
- What the steps measure goes into ``e2e_report`` and is printed as a summary at the end of the
  run (the main job's output) and written to <replica dir>/last-run.json.
"""

import json
import os
import time
from pathlib import Path

import pytest

from tests.e2e.replica_support import Replica

KEEP = os.environ.get("SERVERFIX_REPLICA_KEEP") == "1"
REPORT_FILE = Path(os.environ.get("REPLICA_DIR", "/var/cache/serverfix/replica")) / "last-run.json"
_REPORT = {}


@pytest.fixture(scope="session")
def e2e_report():
    """Figures and findings of the run, by step; printed by pytest_terminal_summary."""
    return _REPORT


@pytest.fixture(scope="session")
def progress(pytestconfig):
    """``progress(text)``: a line on the terminal while a step runs (pytest captures everything else)."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def _say(text):
        line = f"    [{time.strftime('%H:%M:%S')}] {text}"
        if reporter is None or capture is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    return _say


@pytest.fixture(scope="module")
def replica(progress, e2e_report):
    """A freshly booted replica in the "before" state (built and cached on first use)."""
    if os.geteuid() != 0:
        pytest.skip("the replica needs root (systemd-nspawn, loop mounts, nftables)")
    host = Replica()
    progress("booting the replica (builds and caches the image first if needed: ~2-3 min once)")
    seconds = host.up()
    e2e_report.setdefault("replica", {})["up_seconds"] = round(seconds, 1)
    progress(f"replica up at root@{host.ip} in {seconds:.1f} s")
    try:
        yield host
    finally:
        if KEEP:
            progress("kept running (--keep): ./scripts/replica.sh ssh ...  |  ./scripts/replica.sh down")
        else:
            host.down()


def pytest_runtest_makereport(item, call):
    if call.excinfo is not None and call.when in ("setup", "call") and getattr(item.module, "STEPS_IN_ORDER", False):
        if not call.excinfo.errisinstance(pytest.skip.Exception):
            item.module.FAILED_STEP = item.name


def pytest_runtest_setup(item):
    failed = getattr(item.module, "FAILED_STEP", None)
    if failed:
        pytest.skip(f"an earlier step failed ({failed})")


def pytest_terminal_summary(terminalreporter):
    if not _REPORT.get("steps"):
        return
    REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
    REPORT_FILE.write_text(json.dumps(_REPORT, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    terminalreporter.section("serverfix on the replica: summary")
    for line in summary_lines(_REPORT):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(all figures: {REPORT_FILE})")


def summary_lines(report):
    """The main job's readable summary, from what the steps recorded."""
    steps = report["steps"]
    lines = []
    if "replica" in report:
        lines.append(f"replica: booted in {report['replica'].get('up_seconds')} s")
    titles = {
        "diagnose": "1 findings before (serverfix.diagnose)",
        "preview": "2 preview (state.apply serverfix test=True)",
        "apply": "3 apply without the restart flag",
        "apply_restart": "4 apply with serverfix:backend:restart=true",
        "verify": "5 verify (serverfix.verify)",
        "reapply": "6 re-apply",
        "reboot": "7 reboot",
        "latency": "8 POST /reservations latency",
        "master_minion": "salt-master + salt-minion (salt hetzner state.apply serverfix)",
    }
    for key, title in titles.items():
        if key not in steps:
            continue
        lines.append(f"{title}:")
        lines.extend(f"    {text}" for text in steps[key].get("lines", []))
    return lines
