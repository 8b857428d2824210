"""
Does Salt's own ``failhard`` with ``batch`` stop a ``salt.state`` run on Salt 3008.4
(salt#54521, salt#44256)? One orchestration step, ``salt.state`` over three real minions with
``batch: 1`` and ``failhard: true`` (tests/data/orch/failhard_batch.sls). Fault injection: the
stub ``serverfix`` SLS fails on whichever minion applies second (``fail-second``, see
tests/data/orch/README.md; Salt's batch order is not the sorted one); the third must never run.
The rollout (orch/rollout.sls) does not rely on this: it unrolls its batches into steps with
requisites; this test records what Salt itself does.
"""

from tests.support.orch import run_rollout, steps


def test_failhard_with_batch_stops_after_the_second(orch_fleet, stub):
    master, minions = orch_fleet
    ids = sorted(minion.id for minion in minions)
    (stub / "fail-second").write_text("yes\n", encoding="utf-8")
    result = run_rollout(master, {"ids": ids}, sls="failhard_batch")
    (step,) = steps(result).values()
    assert step["result"] is False
    ran = sorted(p.name for p in stub.glob("applied-*"))
    assert len(ran) == 2, f"the third minion ran after the second failed: {ran}"


def test_without_failhard_the_batch_runs_on(orch_fleet, stub):
    """The control: the same run without ``failhard`` applies the third minion too, so the test
    above would see a batch that does not stop."""
    master, minions = orch_fleet
    ids = sorted(minion.id for minion in minions)
    (stub / "fail-second").write_text("yes\n", encoding="utf-8")
    result = run_rollout(master, {"ids": ids}, sls="failhard_batch", extra={"failhard": False})
    (step,) = steps(result).values()
    assert step["result"] is False
    assert len(list(stub.glob("applied-*"))) == 3
