"""
End-to-end layer: the replica host (scripts/replica.sh), a Debian 12 with systemd booted under
systemd-nspawn in its own network namespace, in the runbook's "before" state; the formula is
applied to it over salt-ssh (roster entry ``hetzner``) and once through a real salt-master and a
salt-minion inside it.

- Each test module boots its own replica (or fleet) and tears it down, unless
  SERVERFIX_REPLICA_KEEP=1 (``./scripts/run-replica.sh --keep``); the modules run one after the
  other (replicas share the host's kernel: swap, vm.* sysctls).
- Steps in a module build on each other: after a failed step the later ones are skipped.
- What the steps measure goes into ``e2e_report`` and is printed as a summary at the end of the
  run (tools/mainjob/summary.py, as the main job prints it) and written to
  <replica dir>/last-run.json (or $SERVERFIX_E2E_REPORT).
- ``proof_lab``: the proof tool's lab (tools/proof) for tests/e2e/test_proof_*.py.
- ``fleet`` / ``fleet_master``: ``FLEET_SIZE`` replicas side by side (``hetzner-1`` …) with a
  salt-minion each, joined to a salt-master on the host whose pillar gives each id the module's
  ``host_pillar(minion_id)``; for tests/e2e/test_fleet_*.py.
"""

import os
import time

import pytest

from tests.support.fleet import Fleet
from tests.support.replica import Replica
from tests.support.salt_master import HostMaster
from tools.mainjob.summary import REPORT_FILE, summary_lines, write_report
from tools.proof.lab import ARTIFACTS, Lab
from tools.proof.render import table
from tools.proof.report import finish, write

KEEP = os.environ.get("SERVERFIX_REPLICA_KEEP") == "1"
_REPORT = {}


def write_lines(config, lines):
    """Lines on the terminal from inside a pytest run (past its output capture)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="session")
def e2e_report():
    """Figures and findings of the run, by step; printed by pytest_terminal_summary."""
    return _REPORT


@pytest.fixture(scope="session")
def progress(pytestconfig):
    """``progress(text)``: a line on the terminal while a step runs (pytest captures everything
    else)."""

    def _say(text):
        write_lines(pytestconfig, [f"    [{time.strftime('%H:%M:%S')}] {text}"])

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
            progress(
                "kept running (--keep): ./scripts/replica.sh ssh ...  |  ./scripts/replica.sh down"
            )
        else:
            host.down()


def pytest_runtest_makereport(item, call):
    if (
        call.excinfo is not None
        and call.when in ("setup", "call")
        and getattr(item.module, "STEPS_IN_ORDER", False)
    ):
        if not call.excinfo.errisinstance(pytest.skip.Exception):
            item.module.FAILED_STEP = item.name


def pytest_runtest_setup(item):
    failed = getattr(item.module, "FAILED_STEP", None)
    if failed:
        pytest.skip(f"an earlier step failed ({failed})")


def pytest_terminal_summary(terminalreporter):
    if not _REPORT.get("steps"):
        return
    path = write_report(_REPORT, REPORT_FILE)
    terminalreporter.section("serverfix on the replica: summary")
    for line in summary_lines(_REPORT):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(all figures: {path})")


@pytest.fixture(scope="module")
def proof_lab(request, tmp_path_factory, progress, pytestconfig):
    """A proof Lab (tools/proof) for one test module (its ``PROOF_NAME``, ``PROOF_MODE``): skipped
    unless root; on exit its replica goes down and its report is printed and written to
    ``artifacts/proof-tests-<name>.json``."""
    if os.geteuid() != 0:
        pytest.skip("the replica needs root (systemd-nspawn, loop mounts, nftables)")
    name, mode = request.module.PROOF_NAME, request.module.PROOF_MODE
    lab = Lab(tmp_path_factory.mktemp(f"proof-{name}"), mode, progress)
    try:
        yield lab
    finally:
        lab.close()
        finish(lab)
        path = write(lab.report, ARTIFACTS / f"proof-tests-{name}.json")
        write_lines(pytestconfig, [""] + table(lab.report) + [f"(figures: {path})"])


@pytest.fixture(scope="module")
def fleet(request, progress, e2e_report):
    """``FLEET_SIZE`` fresh replicas side by side, in the "before" state."""
    if os.geteuid() != 0:
        pytest.skip("the replicas need root (systemd-nspawn, loop mounts, nftables)")
    size = getattr(request.module, "FLEET_SIZE", 3)
    group = Fleet(size, progress)
    progress(f"booting {size} replicas side by side (scripts/replica.sh fleet up {size})")
    try:
        seconds = group.up()
        e2e_report.setdefault("fleet", {})["up_seconds"] = round(seconds, 1)
        progress(f"fleet up in {seconds:.1f} s: {', '.join(group.ids)}")
        yield group
    finally:
        if KEEP:
            progress("kept running (--keep): ./scripts/replica.sh fleet down")
        else:
            group.down()


@pytest.fixture(scope="module")
def fleet_master(request, fleet, tmp_path_factory, progress):
    """A salt-master on the fleet's master address with a minion in every member, keys accepted
    after comparison, custom modules synced to the minions and the master (its outputters)."""
    pillar = {minion_id: request.module.host_pillar(minion_id) for minion_id in fleet.ids}
    master = HostMaster(tmp_path_factory.mktemp("fleet-master"), fleet.master_ip, pillar)
    with master:
        installed = fleet.join(master)
        progress(
            "minions: "
            + "; ".join(f"{i} {s:.1f} s ({how})" for i, (s, how) in sorted(installed.items()))
        )
        yield master
