"""The orchestration tests' harness (tests/integration/orch, tests/unit/output): a stub file
root around the real ``formula/serverfix/orch``, a master with three minions of it, the
rollout run, and readers of the orchestrate return."""

import contextlib
import json

from saltfactories.utils import random_string

from tests.support.paths import FORMULA_ROOT, REPO

STUB_DATA = REPO / "tests" / "data" / "orch"
ROLLOUT = "serverfix.orch.rollout"


def stub_file_root(root):
    """Build in directory ``root`` a file root where the real ``serverfix/orch`` (with its
    map.jinja and defaults.yaml), ``_output`` and ``_utils`` are used, but ``serverfix``
    (init.sls) and the ``serverfix`` execution module are the stubs of tests/data/orch."""
    links = {
        "serverfix/orch": FORMULA_ROOT / "serverfix" / "orch",
        "serverfix/map.jinja": FORMULA_ROOT / "serverfix" / "map.jinja",
        "serverfix/defaults.yaml": FORMULA_ROOT / "serverfix" / "defaults.yaml",
        "serverfix/init.sls": STUB_DATA / "serverfix" / "init.sls",
        "_modules": STUB_DATA / "_modules",
        "_output": FORMULA_ROOT / "_output",
        "_utils": FORMULA_ROOT / "_utils",
        "failhard_batch.sls": STUB_DATA / "failhard_batch.sls",
    }
    for name, target in links.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return root


@contextlib.contextmanager
def started_fleet(salt_factories, file_root, stub_dir, count=3):
    """A master serving ``file_root`` (pillar: tests/data/orch/pillar) and ``count`` running
    minions ``orch-<random>-1`` ... (sorted in that order) whose stub reads ``stub_dir``;
    the stub modules synced to the minions, outputters and utils to the master."""
    master = salt_factories.salt_master_daemon(
        random_string("orch-master-"),
        overrides={
            "file_roots": {"base": [str(file_root)]},
            "pillar_roots": {"base": [str(STUB_DATA / "pillar")]},
        },
    )
    prefix = random_string("orch-")
    with master.started():
        with contextlib.ExitStack() as stack:
            minions = []
            for number in range(1, count + 1):
                minion = master.salt_minion_daemon(
                    f"{prefix}-{number}", overrides={"serverfix_stub_dir": str(stub_dir)}
                )
                stack.enter_context(minion.started())
                minions.append(minion)
            salt = master.salt_cli(timeout=120)
            synced = salt.run("saltutil.sync_all", minion_tgt=f"{prefix}-*")
            assert synced.returncode == 0, synced
            synced = master.salt_run_cli(timeout=120).run("saltutil.sync_all")
            assert synced.returncode == 0, synced
            yield master, minions


def run_rollout(master, rollout, *args, sls=ROLLOUT, extra=None):
    """``salt-run state.orchestrate <sls> pillar='{"serverfix": {"rollout": rollout}}'`` with
    salt's usual 10 s for a minion to answer (``--timeout``: a down minion costs that much);
    ``extra``: more top-level pillar keys."""
    pillar = json.dumps(
        {"serverfix": {"rollout": rollout}, "ids": rollout.get("ids", [])} | (extra or {})
    )
    cli = master.salt_run_cli()
    return cli.run(
        "state.orchestrate", sls, f"pillar={pillar}", "--timeout=10", *args, _timeout=400
    )


def steps(result):
    """``{step id: state return}`` of an orchestrate run's JSON return."""
    data = result.data
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    (running,) = data.values()
    return {value["__id__"]: value for value in running.values()}
