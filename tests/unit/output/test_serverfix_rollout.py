"""The rollout summary outputter (formula/_output/serverfix_rollout.py) on orchestration returns
of the shape ``salt-run state.orchestrate serverfix.orch.rollout`` gives (step ids
``rollout/<step>/<ids>``, salt.state / salt.function returns), built here by hand."""

import copy

import pytest
import salt.config

from tests.support.loader import import_salt_module
from tests.support.paths import REPO, UTILS_DIR

rollout_output = import_salt_module(
    REPO / "formula" / "_output" / "serverfix_rollout.py", "serverfix_rollout_output_test"
)
MASK = import_salt_module(UTILS_DIR / "serverfix_mask.py", "serverfix_mask_rollout_output")
A, B, C = "hetzner-1", "hetzner-2", "hetzner-3"
REQ = "One or more requisite failed: serverfix.orch.rollout.rollout/x"


def minion_states(*states):
    """One minion's state return: ``(id, result, comment, changed)`` per state."""
    return {
        f"mod_|-{sid}_|-{sid}_|-fun": {
            "__id__": sid,
            "name": sid,
            "result": result,
            "comment": comment,
            "changes": {"x": 1} if changed else {},
            "__run_num__": number,
        }
        for number, (sid, result, comment, changed) in enumerate(states)
    }


def report(ok, title="Redis answers PING"):
    checks = [{"id": "redis-ping", "status": "pass" if ok else "fail", "title": title}]
    return {"function": "verify", "ok": ok, "counts": {}, "checks": checks}


def step(step_id, number, result=True, rets=None, comment="States ran successfully.", ran=True):
    value = {
        "__id__": step_id,
        "name": step_id,
        "result": result,
        "comment": comment,
        "changes": {"ret": rets} if rets else {},
        "__run_num__": number,
    }
    if not ran:
        value.update(result=False, comment=REQ, __state_ran__=False)
    return value


def running(*steps):
    return {f"salt_|-{s['__id__']}_|-{s['name']}_|-state": s for s in steps}


def rollout(test=None, canary=None, canary_verify=None, b1=None, b1_verify=None, b2=None,
            b2_verify=None, b1_hosts=(B,), b2_hosts=(C,)):  # fmt: skip
    """A three-host rollout; each step given as ``(result, rets, comment)`` or None (not run)."""
    hosts = ",".join((A, *b1_hosts, *b2_hosts))
    specs = [
        ("rollout/targets", (True, None, "targets: ...")),
        (f"rollout/test/{hosts}", test),
        (f"rollout/canary/{A}", canary),
        (f"rollout/canary-verify/{A}", canary_verify),
        (f"rollout/batch-1/{','.join(b1_hosts)}", b1),
        (f"rollout/batch-1-verify/{','.join(b1_hosts)}", b1_verify),
        (f"rollout/batch-2/{','.join(b2_hosts)}", b2),
        (f"rollout/batch-2-verify/{','.join(b2_hosts)}", b2_verify),
    ]
    steps = []
    for number, (step_id, spec) in enumerate(specs):
        if spec is None:
            steps.append(step(step_id, number, ran=False))
        else:
            result, rets, comment = spec
            steps.append(step(step_id, number, result, rets, comment or "ok"))
    return running(*steps)


APPLIED = minion_states(("serverfix-preflight", True, "ok", False), ("env", True, "set", True))
OK = (True, None, None)


def by_host(summary):
    return {entry["host"]: entry for entry in summary["hosts"]}


def test_all_fixed():
    data = rollout(
        test=(None, {A: APPLIED, B: APPLIED, C: APPLIED}, None),
        canary=(True, {A: APPLIED}, None),
        canary_verify=(True, {A: report(True)}, None),
        b1=(True, {B: APPLIED}, None),
        b1_verify=(True, {B: report(True)}, None),
        b2=OK,  # salt.state leaves a minion without changes out of its return
        b2_verify=(True, {C: report(True)}, None),
    )
    summary = rollout_output.summarize(data)
    assert summary["ok"] and summary["stopped_at"] is None
    hosts = by_host(summary)
    assert [hosts[h]["result"] for h in (A, B, C)] == ["fixed"] * 3
    assert [hosts[h]["changes"] for h in (A, B, C)] == [1, 1, 0]
    lines = rollout_output.render(summary, MASK.text)
    assert lines[0] == "serverfix rollout: OK (3 fixed)"


def test_refusal_in_test_mode():
    refused = minion_states(("serverfix-preflight", False, "refused: password=hunter2", False))
    data = rollout(test=(False, {B: refused}, f"Run failed on minions: {B}"))
    summary = rollout_output.summarize(data)
    hosts = by_host(summary)
    assert summary["stopped_at"] == f"rollout/test/{A},{B},{C}"
    assert hosts[B]["result"] == "failed" and hosts[B]["state"] == "serverfix-preflight"
    assert hosts[A]["result"] == "skipped" and hosts[A]["step"] == f"rollout/canary/{A}"
    assert hosts[C]["result"] == "skipped" and hosts[C]["step"] == f"rollout/batch-2/{C}"
    text = "\n".join(rollout_output.render(summary, MASK.text))
    assert "refused: password=<secret>" in text and "hunter2" not in text
    assert "(1 failed, 2 skipped)" in text


def test_the_failing_state_is_the_first_that_failed_itself_not_a_requisite_cascade():
    broken = minion_states(
        ("serverfix-preflight", True, "ok", False),
        ("serverfix-verified", False, "One or more requisite failed: serverfix.backend", False),
        ("serverfix-backend", False, "backend not ready: redis://:pw12@host", True),
    )
    data = rollout(
        test=OK,
        canary=(False, {A: broken}, f"Run failed on minions: {A}"),
    )
    hosts = by_host(rollout_output.summarize(data))
    assert hosts[A]["state"] == "serverfix-backend" and hosts[A]["changes"] == 1
    text = "\n".join(rollout_output.render(rollout_output.summarize(data), MASK.text))
    assert "redis://:<secret>@host" in text
    assert [hosts[h]["result"] for h in (B, C)] == ["skipped", "skipped"]


def test_second_batch_verify_fails():
    data = rollout(
        test=OK,
        canary=(True, {A: APPLIED}, None),
        canary_verify=(True, {A: report(True)}, None),
        b1=(True, {B: APPLIED}, None),
        b1_verify=(False, {B: report(False, "Redis does not answer")}, "Running function ..."),
    )
    summary = rollout_output.summarize(data)
    hosts = by_host(summary)
    assert summary["stopped_at"] == f"rollout/batch-1-verify/{B}"
    assert (hosts[A]["result"], hosts[B]["result"], hosts[C]["result"]) == (
        "fixed",
        "failed",
        "skipped",
    )
    assert hosts[B]["state"] == "serverfix.verify redis-ping"
    assert hosts[B]["comment"] == "redis-ping: Redis does not answer"


def test_a_host_without_a_return_fails_with_the_step_comment():
    data = rollout(test=OK, canary=(False, {A: False}, f"Run failed on minions: {A}\nno return"))
    entry = by_host(rollout_output.summarize(data))[A]
    assert entry["result"] == "failed" and entry["state"] == "(no return)"
    assert "no return" in entry["comment"]


def test_a_render_error_is_a_failure_with_its_messages():
    data = rollout(test=(False, {C: ["Rendering SLS 'base:serverfix' failed: bad"]}, "Run failed"))
    entry = by_host(rollout_output.summarize(data))[C]
    assert entry["state"] == "(render)" and "Rendering SLS" in entry["comment"]


def test_the_others_of_a_failed_batch_are_unverified():
    data = rollout(
        test=OK,
        canary=(True, {A: APPLIED}, None),
        canary_verify=(True, {A: report(True)}, None),
        b1=(False, {B: APPLIED, C: minion_states(("x", False, "boom", False))}, "Run failed"),
        b1_hosts=(B, C),
        b2_hosts=("hetzner-4",),
    )
    hosts = by_host(rollout_output.summarize(data))
    assert hosts[B]["result"] == "unverified" and hosts[C]["result"] == "failed"
    assert hosts["hetzner-4"]["result"] == "skipped"


def test_a_refused_target_stops_before_anything():
    data = running(step("rollout/targets", 0, False, comment="not answering: hetzner-2 ..."))
    summary = rollout_output.summarize(data)
    assert summary["problem"] == "not answering: hetzner-2 ..." and summary["hosts"] == []
    lines = rollout_output.render(summary, MASK.text)
    assert lines == [
        "serverfix rollout: STOPPED before anything changed (rollout/targets)",
        "  not answering: hetzner-2 ...",
    ]


def test_without_the_mask_no_comment_is_shown():
    refused = minion_states(("serverfix-preflight", False, "token=abcdef", False))
    summary = rollout_output.summarize(rollout(test=(False, {B: refused}, "Run failed")))
    text = "\n".join(rollout_output.render(summary, None))
    assert "abcdef" not in text and "saltutil.sync_utils" in text


def test_masked_data_masks_every_string_keys_included():
    data = {"a_|-password=xyz1_|-b": {"comment": ["url redis://:pw99@h", "ok"], "n": 3}}
    assert rollout_output.masked_data(data, MASK.text) == {
        "a_|-password=<secret>": {"comment": ["url redis://:<secret>@h", "ok"], "n": 3}
    }


@pytest.mark.parametrize(
    "data",
    [
        {"m": {"x": {"__id__": "not-a-rollout", "result": True}}},
        {"data": {"m": "text"}, "outputter": "highstate"},
        "plain",
        {},
    ],
)
def test_other_data_is_not_a_rollout(data):
    assert rollout_output.running_of(data) is None


def test_output_prints_the_masked_highstate_then_the_summary(monkeypatch, tmp_path):
    opts = copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS)
    opts.update(color=False, cachedir=str(tmp_path), extension_modules=str(tmp_path / "ext"))
    monkeypatch.setattr(rollout_output, "__opts__", opts, raising=False)
    monkeypatch.setitem(rollout_output._MASK, "text", MASK.text)  # pylint: disable=protected-access
    refused = minion_states(("serverfix-preflight", False, "refused: password=hunter2", False))
    data = {
        "data": {"master_master": rollout(test=(False, {B: refused}, "Run failed"))},
        "outputter": "highstate",
        "retcode": 1,
    }
    text = rollout_output.output(data)
    assert "hunter2" not in text
    assert "password=<secret>" in text.split("serverfix rollout:")[0]  # the highstate part
    assert "serverfix rollout: STOPPED at rollout/test/" in text
