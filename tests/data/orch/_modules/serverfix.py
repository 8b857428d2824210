"""
STUB of the formula's ``serverfix`` execution module for tests/integration/orch: fault
injection of a host's failure (README.md next to this file). Only what the rollout calls.
"""

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    __opts__: dict[str, Any]
    __context__: dict[str, Any]


def stub_dir():
    """
    The control directory of the test (minion option ``serverfix_stub_dir``).

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.stub_dir
    """
    return __opts__["serverfix_stub_dir"]


def stub_faults():
    """
    The steps (``test``, ``apply``, ``verify``) that fail on this minion: those whose
    ``fail-<step>`` file in :func:`stub_dir` lists this minion's id.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.stub_faults
    """
    faults = []
    for step in ("test", "apply", "verify"):
        path = os.path.join(stub_dir(), f"fail-{step}")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                if __opts__["id"] in handle.read().split():
                    faults.append(step)
    # fail-second: the apply fails on whichever minion applies second (Salt's batch order is
    # not the sorted one), for the failhard+batch test
    if os.path.exists(os.path.join(stub_dir(), "fail-second")):
        others = [
            name
            for name in os.listdir(stub_dir())
            if name.startswith("applied-") and name != f"applied-{__opts__['id']}"
        ]
        if len(others) == 1:
            faults.append("apply")
    return faults


def verify():
    """
    A verify report of the real shape; one failed check and retcode 1 on a ``fail-verify``
    minion, as the real ``serverfix.verify`` signals a failed check.

    CLI Example:

    .. code-block:: bash

        salt '*' serverfix.verify
    """
    with open(os.path.join(stub_dir(), f"verified-{__opts__['id']}"), "a", encoding="utf-8") as f:
        f.write("verify\n")
    failed = "verify" in stub_faults()
    checks = [
        {
            "id": "redis-ping",
            "status": "fail" if failed else "pass",
            "title": (
                "Redis does not answer PING: redis://:hunter2secret@127.0.0.1:6379"
                if failed
                else "Redis answers PING"
            ),
            "evidence": {},
            "fix": {"hint": "start redis-server"} if failed else {},
        }
    ]
    if failed:
        __context__["retcode"] = 1
    return {
        "function": "verify",
        "version": 1,
        "ok": not failed,
        "duration_ms": 1,
        "counts": {"fail": int(failed), "warn": 0, "pass": int(not failed), "skip": 0, "info": 0},
        "settings": {},
        "checks": checks,
    }
