"""
A fault on the canary stops the rollout (formula/serverfix/orch/rollout.sls) after the canary:
hetzner-1's new .env makes its backend crash at the consented restart (PORT=22: sshd holds it,
per-host pillar), so its restart state fails and the .env is rolled back; hetzner-2 and hetzner-3
are never applied (their files, Redis, swap and pm2 checksummed before and after), and the summary
names the canary, the failing state and its message. Three fresh replicas side by side.
"""

import pytest

from tests.support.fleet import rollout, rollout_summary, untouched
from tests.support.replica import HEALTH_URL_IN_GUEST

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

STEPS_IN_ORDER = True
FLEET_SIZE = 3
CANARY = "hetzner-1"


def host_pillar(minion_id):
    settings = {"verify": {"url": HEALTH_URL_IN_GUEST}, "swap": {"file": f"/swapfile-{minion_id}"}}
    if minion_id == CANARY:  # the fault: the backend cannot bind its port after the restart
        settings.update(backend={"ready_timeout": 15}, dotenv={"extra": {"PORT": 22}})
    return {"serverfix": settings}


def test_a_crash_on_the_canary_stops_the_rollout(fleet, fleet_master, e2e_report, progress):
    entry = e2e_report.setdefault("steps", {}).setdefault("fleet_canary_fault", {"lines": []})
    swap = {i: host_pillar(i)["serverfix"]["swap"]["file"] for i in fleet.ids}
    before = {m.name: m.snapshot(swap[m.name]) for m in fleet.members}
    progress("rollout with a canary whose backend crashes after the restart")
    rc, data, seconds = rollout(fleet_master, target="hetzner-*", batch=1, restart=True)
    summary, text = rollout_summary(data)
    assert rc != 0, text
    canary = summary[CANARY]
    assert canary["result"] == "failed", text
    assert (
        canary["state"] == "serverfix-backend-restarted" and "did NOT come up" in canary["comment"]
    ), text
    others = [i for i in fleet.ids if i != CANARY]
    assert all(summary[i]["result"] == "skipped" for i in others), text
    for name in others:
        assert untouched(before[name], fleet.by_id(name).snapshot(swap[name])), name
    assert fleet.by_id(CANARY).app_mode() == "fallback"  # rolled back: its old .env, restarted
    entry["lines"].append(
        f"stopped after the canary in {seconds:.0f} s: {CANARY} failed at {canary['state']}; "
        f"{', '.join(others)} untouched (files, Redis, swap, pm2 checksums equal)"
    )
    entry["lines"] += ["  " + line for line in text]
