"""
serverfix states: the formula's preflight (the first state of every run) and the runbook's final
checks (the last one).

Thin over the ``serverfix`` execution module: they decide and build the return; the checks are
``serverfix.preflight`` and ``serverfix.verify``.
"""

from typing import TYPE_CHECKING, Any

from salt.exceptions import SaltException

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]
    __opts__: dict[str, Any]
    __pillar__: dict[str, Any]

__virtualname__ = "serverfix"


def __virtual__():
    if "serverfix.preflight" in __salt__:
        return __virtualname__
    return (
        False,
        "the serverfix execution module is not loaded: run saltutil.sync_all, "
        "or state.apply serverfix sync_mods=all",
    )


def preflight(name, config):
    """
    Fail, before anything changes, when the pillar or the files and tools the phases need
    are not right. Every other state of the formula requires this one.

    name
        Any id; the formula uses ``serverfix-preflight``.
    config
        The merged settings from map.jinja; ``{"pillar": "<key>"}`` references in it are read from
        the pillar.

    .. code-block:: yaml

        serverfix-preflight:
          serverfix.preflight:
            - config: {{ serverfix | json }}
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    config = __utils__["serverfix_pillar.resolve_all"](config, __pillar__)
    # only the phases this run applies (state.apply serverfix.redis needs no .env yet)
    lowstate = globals().get("__lowstate__") or []
    phases = (
        sorted({str(chunk.get("__sls__", "")).rsplit(".", 1)[-1] for chunk in lowstate}) or None
    )
    try:
        __salt__["serverfix.preflight"](config, phases=phases)
    except SaltException as exc:
        errors = __utils__["serverfix_errors.problems"](exc)
        ret["result"] = False
        ret["comment"] = (
            "Nothing was changed: fix these first (see pillar.example):\n- " + "\n- ".join(errors)
        )
        return ret
    ret["comment"] = "Pillar, files and tools are fine."
    return ret


def _verify_lines(report):
    """One line per check, problems first: the state comment (the table is serverfix.verify's)."""
    order = {"fail": 0, "warn": 1, "pass": 2, "info": 3, "skip": 4}
    lines = []
    for check in sorted(report["checks"], key=lambda c: order.get(c["status"], 5)):
        fix = check["fix"]
        where = " · ".join(x for x in (fix.get("state"), fix.get("pillar")) if x)
        hint = f" (fix: {where})" if where and check["status"] in ("fail", "warn") else ""
        lines.append(f"{check['status'].upper():<4} {check['id']}: {check['title']}{hint}")
    return lines


def verified(name, config):
    """
    The runbook's final checks (``serverfix.verify``) as the last state of the formula: fails
    the run when a check fails. Changes nothing. In test mode a failing check is reported with
    result ``None`` (it is expected to pass once the changes before it are applied).

    name
        Any id; the formula uses ``serverfix-verified``.
    config
        The merged settings from map.jinja; ``{"pillar": "<key>"}`` references in it are read from
        the pillar.

    .. code-block:: yaml

        serverfix-verified:
          serverfix.verified:
            - config: {{ serverfix | json }}
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        config = __utils__["serverfix_pillar.resolve_all"](config, __pillar__)
        # one pm2 jlist per run: the list the pm2 states read (and refreshed after any change)
        report = __salt__["serverfix.verify"](config, set_retcode=False, reuse_pm2_list=True)
    except SaltException as exc:
        ret["result"] = False
        ret["comment"] = "serverfix.verify could not run: " + __utils__["serverfix_errors.message"](
            exc
        )
        return ret
    counts = report["counts"]
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    lines = _verify_lines(report)
    if report["ok"]:
        ret["comment"] = (
            f"All checks passed ({summary}; {report['duration_ms']} ms):\n" + "\n".join(lines)
        )
    elif __opts__["test"]:
        ret["result"] = None
        ret["comment"] = (
            f"Would verify after the changes above; checked now ({summary}), these do not pass "
            "yet:\n" + "\n".join(lines)
        )
    else:
        ret["result"] = False
        ret["comment"] = f"Verification failed ({summary}):\n" + "\n".join(lines)
    return ret
