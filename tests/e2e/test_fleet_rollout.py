"""
The rolling fix over three replicas through a real salt-master and a salt-minion in each
(``hetzner-1`` … ``hetzner-3``, side by side), with the orchestration a Salt admin runs
(formula/serverfix/orch/rollout.sls, docs/rollout.md):

    salt-run state.orchestrate serverfix.orch.rollout \\
      pillar='{"serverfix": {"rollout": {"target": "hetzner-*", "batch": 1, "restart": true}}}'

In order: a refusal in one host's preview stops the rollout before anything changes anywhere;
the rollout from "before" fixes all three (verify passes on each); its re-run changes nothing.
Each host has its own pillar (hetzner-1 a Redis password, the others none) and its own swap file
path: the replicas share one kernel, whose /proc/swaps names each guest's file by the guest's path.
"""

import json
import secrets

import pytest

from tests.support.fleet import ROLLOUT_SLS as ROLLOUT
from tests.support.fleet import rollout, rollout_summary, untouched
from tests.support.replica import HEALTH_URL_IN_GUEST

pytestmark = [pytest.mark.e2e, pytest.mark.destructive_test]

STEPS_IN_ORDER = True
FLEET_SIZE = 3
TARGET = "hetzner-*"
REDIS_PASSWORD = "fleet-" + secrets.token_hex(12)  # hetzner-1's; must never show up in output


def host_pillar(minion_id, **override):
    settings = {
        "verify": {"url": HEALTH_URL_IN_GUEST},
        "swap": {"file": "/swapfile" if minion_id.endswith("-1") else f"/swapfile-{minion_id}"},
    }
    if minion_id.endswith("-1"):
        settings["redis"] = {"password": REDIS_PASSWORD}
    settings.update(override)
    return {"serverfix": settings}


@pytest.fixture(scope="module")
def entry(e2e_report):
    return e2e_report.setdefault("steps", {}).setdefault("fleet_rollout", {"lines": []})


def test_a_refusal_in_one_preview_stops_before_anything_changes(fleet, fleet_master, entry):
    """hetzner-3's pillar has a bad value: its preflight refuses in the test=True step, and no
    host (the canary included) gets any change."""
    before = {
        m.name: m.snapshot(host_pillar(m.name)["serverfix"]["swap"]["file"]) for m in fleet.members
    }
    bad = {
        **{i: host_pillar(i) for i in fleet.ids},
        "hetzner-3": host_pillar("hetzner-3", redis={"port": "six"}),
    }
    fleet_master.write_pillar(bad)
    fleet_master.salt("*", "saltutil.refresh_pillar")
    try:
        rc, data, seconds = rollout(fleet_master, target=TARGET, batch=1, restart=True)
    finally:
        fleet_master.write_pillar({i: host_pillar(i) for i in fleet.ids})
        fleet_master.salt("*", "saltutil.refresh_pillar")
    summary, text = rollout_summary(data)
    assert rc != 0, text
    assert (
        summary["hetzner-3"]["result"] == "failed"
        and "serverfix:redis:port" in summary["hetzner-3"]["comment"]
    ), text
    assert all(summary[i]["result"] == "skipped" for i in ("hetzner-1", "hetzner-2")), text
    for member in fleet.members:
        assert untouched(
            before[member.name],
            member.snapshot(host_pillar(member.name)["serverfix"]["swap"]["file"]),
        ), member.name
    entry["lines"].append(
        f"refusal on hetzner-3 in the preview: stopped in {seconds:.0f} s, 3 hosts untouched"
    )


def test_the_rollout_from_before_fixes_every_host(fleet, fleet_master, entry, progress):
    progress(f"salt-run state.orchestrate {ROLLOUT} (target {TARGET}, batch 1, restart)")
    rc, data, seconds = rollout(fleet_master, target=TARGET, batch=1, restart=True)
    summary, text = rollout_summary(data)
    assert rc == 0, text
    assert {i: s["result"] for i, s in summary.items()} == {i: "fixed" for i in fleet.ids}, text
    for member in fleet.members:
        assert member.app_mode() == "queue", member.name
        rc, report = fleet_master.salt(member.name, "serverfix.verify")
        assert rc == 0 and report[member.name]["ok"] is True, report
    assert REDIS_PASSWORD not in json.dumps(data) + "\n".join(text)
    entry["rollout_seconds"] = round(seconds, 1)
    entry["summary"] = text
    entry["lines"].append(
        f"rollout from before on {len(fleet.ids)} hosts: {seconds:.0f} s, all fixed and verified"
    )
    entry["lines"] += ["  " + line for line in text]


def test_the_rollout_again_changes_nothing(fleet, fleet_master, entry):
    """The re-run as the admin sees it (``--out=serverfix_rollout``): all fixed, 0 changes."""
    rc, text, seconds = rollout(
        fleet_master, out="serverfix_rollout", target=TARGET, batch=1, restart=True
    )
    summary = text[text.index("serverfix rollout:") :].splitlines()
    assert rc == 0 and summary[0] == f"serverfix rollout: OK ({FLEET_SIZE} fixed)", text[-3000:]
    rows = {line.split()[0]: line.split()[1:3] for line in summary[2:] if line.strip()}
    assert rows == {i: ["fixed", "0"] for i in fleet.ids}, summary
    assert REDIS_PASSWORD not in text
    entry["lines"].append(f"re-run: 0 changes on {len(rows)} hosts in {seconds:.0f} s")
    entry["lines"] += ["  " + line for line in summary]
