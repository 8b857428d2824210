"""
The rollout orchestration (formula/serverfix/orch/rollout.sls) on a real salt-master with three
real salt-minions on this host. Fault injection: the minions run the stub ``serverfix`` SLS and
``serverfix`` module of tests/data/orch (README.md there), which succeed, or fail on the minions
a test lists in the stub's ``fail-<step>`` files, so a host's failure is chosen without changing
this host. The orchestration itself, the master-side target resolution, the requisites and the
summary outputter (formula/_output/serverfix_rollout.py) are the real ones.
"""

import pytest

from tests.support.orch import run_rollout, steps


@pytest.fixture
def ids(orch_fleet):
    return sorted(minion.id for minion in orch_fleet[1])


@pytest.fixture
def master(orch_fleet):
    return orch_fleet[0]


def glob(ids):
    return ids[0].rsplit("-", 1)[0] + "-*"


def fault(stub, step, *hosts):
    (stub / f"fail-{step}").write_text("\n".join(hosts) + "\n", encoding="utf-8")


def applied(stub):
    """``{minion id: what its stub apply wrote}`` (the hosts the rollout changed)."""
    return {
        p.name[len("applied-") :]: p.read_text(encoding="utf-8").strip()
        for p in stub.glob("applied-*")
    }


def verified(stub):
    return sorted(p.name[len("verified-") :] for p in stub.glob("verified-*"))


def expected_steps(ids, canary=None, batches=None):
    canary = canary or ids[0]
    rest = [i for i in ids if i != canary]
    batches = batches or [[i] for i in rest]
    names = ["rollout/targets", "rollout/test/" + ",".join(ids)]
    names += [f"rollout/canary/{canary}", f"rollout/canary-verify/{canary}"]
    for number, hosts in enumerate(batches, 1):
        names += [f"rollout/batch-{number}/{','.join(hosts)}"]
        names += [f"rollout/batch-{number}-verify/{','.join(hosts)}"]
    return names


def in_order(result):
    return [
        step["__id__"] for step in sorted(steps(result).values(), key=lambda s: s["__run_num__"])
    ]


def not_run(step):
    return step["result"] is False and step["comment"].startswith("One or more requisite failed")


def test_all_pass_then_rerun_has_no_changes(master, ids, stub):
    """All three fixed in order (test=True, canary + verify, two batches of one + verify each),
    the restart consent merged over each minion's own pillar; the re-run changes nothing."""
    first = run_rollout(master, {"target": glob(ids), "restart": True})
    assert first.returncode == 0, first.stdout
    assert in_order(first) == expected_steps(ids)
    for step_id, step in steps(first).items():
        # test=True with predicted changes: None, as salt.state reports it
        assert step["result"] is (None if step_id.startswith("rollout/test/") else True), step_id
    # name from the minion's own pillar, restart from the rollout: pillar= merges, not replaces
    assert applied(stub) == {i: f"name=app-{i} restart=True" for i in ids}
    assert verified(stub) == ids

    again = run_rollout(master, {"target": glob(ids), "restart": True})
    assert again.returncode == 0, again.stdout
    for step_id, step in steps(again).items():
        assert step["result"] is True, step_id
        if step_id.split("/")[1] in ("test", "canary", "batch-1", "batch-2"):
            assert step["changes"] == {}, step_id  # salt.state: no minion changed anything


def test_the_rollout_in_test_mode_changes_nothing_anywhere(master, ids, stub):
    """``salt-run state.orchestrate serverfix.orch.rollout test=True``: every step previews, no
    host applies anything and no verify runs; the exit status says whether it would pass."""
    result = run_rollout(master, {"target": glob(ids), "restart": True}, "test=True")
    assert result.returncode == 0, result.stdout
    assert in_order(result) == expected_steps(ids)
    assert all(step["result"] is not False for step in steps(result).values()), result.stdout
    assert applied(stub) == {}
    assert verified(stub) == []


def test_without_consent_no_restart_is_passed(master, ids, stub):
    result = run_rollout(master, {"target": glob(ids)}, "--out=serverfix_rollout")
    assert result.returncode == 0, result.stdout
    assert applied(stub) == {i: f"name=app-{i} restart=False" for i in ids}
    summary = result.stdout[result.stdout.index("serverfix rollout:") :].splitlines()
    assert summary[0] == "serverfix rollout: OK (3 fixed)"
    verify_steps = [f"rollout/canary-verify/{ids[0]}"]
    verify_steps += [f"rollout/batch-{n}-verify/{ids[n]}" for n in (1, 2)]
    assert [row.split() for row in summary[2:5]] == [
        [host, "fixed", "1", step] for host, step in zip(ids, verify_steps, strict=True)
    ]


def test_canary_and_batch_size_from_the_pillar(master, ids, stub):
    result = run_rollout(master, {"target": glob(ids), "canary": ids[2], "batch": 2})
    assert result.returncode == 0, result.stdout
    assert in_order(result) == expected_steps(ids, canary=ids[2], batches=[ids[:2]])
    assert sorted(applied(stub)) == ids


def test_refusal_in_test_mode_applies_nothing_anywhere(master, ids, stub):
    fault(stub, "test", ids[1])
    result = run_rollout(master, {"target": glob(ids)})
    assert result.returncode != 0
    ran = steps(result)
    test_step = ran["rollout/test/" + ",".join(ids)]
    assert test_step["result"] is False
    assert ids[1] in test_step["comment"]
    refusal = test_step["changes"]["ret"][ids[1]]
    assert any("preflight refused" in s["comment"] for s in refusal.values())
    assert all(not_run(s) for k, s in ran.items() if k.split("/")[1] not in ("targets", "test"))
    assert applied(stub) == {}
    assert verified(stub) == []


@pytest.mark.parametrize(
    "step, failed_step, verified_ids",
    [
        ("apply", "canary", 0),
        # serverfix.verify signals a failed check with retcode 1 (and ``ok: false``): that fails
        # the salt.function step
        ("verify", "canary-verify", 1),
    ],
)
def test_a_canary_failure_stops_before_the_others(
    master, ids, stub, step, failed_step, verified_ids
):
    fault(stub, step, ids[0])
    result = run_rollout(master, {"target": glob(ids)})
    assert result.returncode != 0
    ran = steps(result)
    assert ran[f"rollout/{failed_step}/{ids[0]}"]["result"] is False
    if step == "apply":
        assert not_run(ran[f"rollout/canary-verify/{ids[0]}"])
    assert not_run(ran[f"rollout/batch-1/{ids[1]}"])
    assert not_run(ran[f"rollout/batch-2/{ids[2]}"])
    assert sorted(applied(stub)) == [ids[0]]  # the others untouched
    assert verified(stub) == ids[:verified_ids]


def test_second_batch_fails_and_the_third_never_runs(master, ids, stub):
    """batch 1: canary ids[0], then ids[1] (fails its verify), then ids[2] (never runs); the
    summary names the failed host, its check and the masked message, and the skipped one."""
    fault(stub, "verify", ids[1])
    result = run_rollout(master, {"target": glob(ids), "batch": 1}, "--out=serverfix_rollout")
    assert result.returncode != 0
    assert sorted(applied(stub)) == ids[:2]  # the canary stays fixed, ids[2] untouched
    assert verified(stub) == ids[:2]
    out = result.stdout
    summary = out[out.index("serverfix rollout: STOPPED") :]
    print(summary)
    assert f"STOPPED at rollout/batch-1-verify/{ids[1]} (1 fixed, 1 failed, 1 skipped)" in summary
    rows = summary.splitlines()
    assert any(r.split()[:2] == [ids[0], "fixed"] for r in rows)
    assert any(r.split()[:2] == [ids[1], "failed"] for r in rows)
    assert any(
        r.split()[:2] == [ids[2], "skipped"] and f"rollout/batch-2/{ids[2]}" in r for r in rows
    )
    assert "state:   serverfix.verify redis-ping" in summary
    assert "redis://:<secret>@127.0.0.1:6379" in summary
    assert "hunter2secret" not in out  # masked in the highstate output above it too


def test_apply_failure_in_a_batch_names_the_state_and_masks_its_comment(master, ids, stub):
    fault(stub, "apply", ids[1])
    result = run_rollout(master, {"target": glob(ids)}, "--out=serverfix_rollout")
    assert result.returncode != 0
    assert sorted(applied(stub)) == ids[:2]
    assert "serverfix rollout:" in result.stdout, result.stdout + result.stderr
    summary = result.stdout[result.stdout.index("serverfix rollout:") :]
    print(summary)
    assert f"STOPPED at rollout/batch-1/{ids[1]}" in summary
    assert "state:   serverfix-backend" in summary
    assert "REDIS_PASSWORD=<secret> rejected" in summary
    assert "hunter2secret" not in result.stdout


def test_target_matching_nothing_stops_before_anything(master, ids, stub):
    result = run_rollout(master, {"target": "nobody-here-*"})
    assert result.returncode != 0
    ran = steps(result)
    assert list(ran) == ["rollout/targets"]
    assert "nobody-here-* (glob) matches no minion" in ran["rollout/targets"]["comment"]
    assert "salt-key -L" in ran["rollout/targets"]["comment"]
    assert applied(stub) == {}


@pytest.mark.parametrize(
    ("rollout", "key"),
    [
        ({}, "serverfix:rollout:target is not set"),
        ({"target": "x-*", "batch": 0}, "serverfix:rollout:batch: 0 is not valid"),
        ({"target": "x-*", "tgt_type": "magic"}, "serverfix:rollout:tgt_type: magic is not valid"),
        ({"target": "x-*", "restart": "yes"}, "serverfix:rollout:restart: yes is not valid"),
    ],
)
def test_bad_rollout_pillar_stops_before_anything(master, stub, rollout, key):
    result = run_rollout(master, rollout)
    assert result.returncode != 0
    ran = steps(result)
    assert list(ran) == ["rollout/targets"]
    assert key in ran["rollout/targets"]["comment"]


def test_canary_not_in_the_target_stops_before_anything(master, ids, stub):
    result = run_rollout(master, {"target": glob(ids), "canary": "elsewhere"})
    ran = steps(result)
    assert list(ran) == ["rollout/targets"]
    assert "serverfix:rollout:canary: elsewhere is not among" in ran["rollout/targets"]["comment"]
    assert applied(stub) == {}


def test_a_host_down_stops_before_anything(orch_fleet, ids, stub):
    """A minion with an accepted key that does not answer: the rollout names it and the fix,
    and no host is touched."""
    master = orch_fleet[0]
    down = master.salt_minion_daemon(
        "down-" + ids[0].rsplit("-", 1)[0], overrides={"serverfix_stub_dir": str(stub)}
    )
    with down.started():
        pass  # its key is accepted now; it no longer answers
    result = run_rollout(
        master, {"target": ",".join([*ids, down.id]), "tgt_type": "list"}, "--out=serverfix_rollout"
    )
    assert result.returncode != 0
    assert "serverfix rollout:" in result.stdout, result.stdout + result.stderr
    summary = result.stdout[result.stdout.index("serverfix rollout:") :]
    print(summary)
    assert "STOPPED before anything changed" in summary
    assert f"not answering: {down.id}" in summary
    assert "systemctl start salt-minion" in summary
    assert applied(stub) == {}
