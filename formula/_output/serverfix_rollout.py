"""
serverfix_rollout: the return of the ``serverfix.orch.rollout`` orchestration as the usual
highstate output followed by one summary row per host: ``fixed`` (applied and verified, with
its number of changed states), ``failed`` (the step, the failing state id and its comment),
``skipped`` (never applied: the rollout stopped before its step) or ``unverified`` (applied,
its verify never ran). Every text shown passes ``serverfix_mask`` first (a comment may hold a
secret), the highstate output too.

Sync it and the utils it uses to the master once, then pick it with ``--out``:

.. code-block:: bash

    salt-run saltutil.sync_output && salt-run saltutil.sync_utils
    salt-run state.orchestrate serverfix.orch.rollout --out=serverfix_rollout \\
        pillar='{"serverfix": {"rollout": {"target": "hetzner-*"}}}'

The summary is built from the step ids the orchestration uses, ``rollout/<step>/<ids>``
(``targets``, ``test``, ``canary``, ``canary-verify``, ``batch-<n>``, ``batch-<n>-verify``;
``<ids>`` comma-separated), and the minion returns each step carries. Anything else is printed
by ``highstate`` (or ``nested``) alone.
"""

from typing import TYPE_CHECKING, Any

import salt.exceptions
import salt.loader
import salt.output
import salt.utils.color

if TYPE_CHECKING:
    __opts__: dict[str, Any]

__virtualname__ = "serverfix_rollout"

PREFIX = "rollout/"
REQUISITE_FAILED = "One or more requisite failed"
HOST_WIDTH = 20
_MASK = {}


def __virtual__():
    return __virtualname__


def _masker(opts):
    """``serverfix_mask.text`` from the master's synced utils, or ``None``."""
    if "text" not in _MASK:
        try:
            _MASK["text"] = salt.loader.utils(opts)["serverfix_mask.text"]
        except (KeyError, ImportError, salt.exceptions.SaltException):
            _MASK["text"] = None
    return _MASK["text"]


def masked_data(data, text):
    """``data`` with ``text`` (``serverfix_mask.text``) applied to every string in it, keys
    included (a state's tag holds its name)."""
    if isinstance(data, dict):
        return {masked_data(k, text): masked_data(v, text) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [masked_data(item, text) for item in data]
    return text(data) if isinstance(data, str) else data


def running_of(data):
    """The orchestration's ``{state tag: return}`` in ``data`` (the runner's return, with or
    without its ``data``/``outputter`` envelope), or ``None`` when ``data`` is not a rollout."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "outputter" in data:
        data = data["data"]
    if not isinstance(data, dict) or len(data) != 1:
        return None
    (running,) = data.values()
    if not isinstance(running, dict) or not running:
        return None
    if not all(isinstance(v, dict) for v in running.values()):
        return None
    if not any(str(v.get("__id__", "")).startswith(PREFIX) for v in running.values()):
        return None
    return running


def _parse(step_id):
    """``(kind, [ids])`` of a step id ``rollout/<kind>/<ids>``; ``kind`` without ``-verify``
    and a verify flag: ``("batch-1", ["a", "b"], True)``."""
    parts = step_id[len(PREFIX) :].split("/", 1)
    kind = parts[0]
    hosts = [h for h in parts[1].split(",") if h] if len(parts) > 1 else []
    verify = kind.endswith("-verify")
    return (kind[: -len("-verify")] if verify else kind), hosts, verify


def _ran(step):
    comment = str(step.get("comment") or "")
    return step.get("__state_ran__", True) and not comment.startswith(REQUISITE_FAILED)


def _state_failure(ret):
    """``(state id, comment)`` of the first failed state in one minion's state return (one that
    failed itself before one that failed for a requisite), or ``None``."""
    if not isinstance(ret, dict):
        return None
    failed = [
        v for v in ret.values() if isinstance(v, dict) and "result" in v and v["result"] is False
    ]
    if not failed:
        return None
    failed.sort(
        key=lambda v: (str(v.get("comment", "")).startswith(REQUISITE_FAILED), v.get("__run_num__"))
    )
    first = failed[0]
    return str(first.get("__id__") or first.get("name")), str(first.get("comment", ""))


def _verify_failure(ret):
    """``(state, comment)`` of a failed verify report (its failed checks), or ``None``."""
    if not _is_report(ret) or ret.get("ok", True):
        return None
    checks = [c for c in ret.get("checks") or [] if c.get("status") == "fail"]
    ids = ", ".join(str(c.get("id")) for c in checks)
    comment = "; ".join(f"{c.get('id')}: {c.get('title')}" for c in checks)
    return f"serverfix.verify {ids}".strip(), comment or "verify failed"


def _changed(ret):
    if not isinstance(ret, dict):
        return 0
    return sum(1 for v in ret.values() if isinstance(v, dict) and v.get("changes"))


def _failure(ret, verify, step):
    """``(state, comment)`` of one host's failure in a step, or ``None`` when it passed."""
    if verify:
        failure = _verify_failure(ret)
        if failure is None and step.get("result") is False and not _is_report(ret):
            # no report: an error text, or no return at all
            shown = str(step.get("comment", "")) if ret in (None, False) else str(ret)
            failure = ("serverfix.verify", shown)
        return failure
    if ret is False:  # salt.state: the minion gave no usable return
        return "(no return)", str(step.get("comment", ""))
    if isinstance(ret, (list, str)):  # a render error: the minion's messages
        return "(render)", ret if isinstance(ret, str) else "\n".join(map(str, ret))
    return _state_failure(ret)


def _is_report(ret):
    return isinstance(ret, dict) and ret.get("function") == "verify"


def summarize(running):
    """
    The rollout's outcome from the orchestration's ``running`` dict::

        {"ok": bool, "stopped_at": the first failed step id or None,
         "problem": the targets step's comment when it refused (nothing touched) or None,
         "hosts": [{"host", "result": "fixed" | "failed" | "skipped" | "unverified",
                    "step", "changes", "state", "comment"}]}   # in rollout order

    ``fixed``: applied and verified; ``unverified``: applied, but its verify never ran (another
    host of its batch failed); ``skipped``: never applied (``step`` is the one that did not run).
    """
    steps = sorted(
        (v for v in running.values() if str(v.get("__id__", "")).startswith(PREFIX)),
        key=lambda v: v.get("__run_num__", 0),
    )
    hosts = {}
    summary = {"ok": True, "stopped_at": None, "problem": None, "hosts": []}
    for step in steps:
        step_id = str(step["__id__"])
        kind, ids, verify = _parse(step_id)
        for host in ids:
            hosts.setdefault(host, {"host": host, "result": "skipped", "step": "", "changes": 0})
        if kind == "targets":
            if step.get("result") is False:
                summary.update(ok=False, stopped_at=step_id, problem=str(step.get("comment")))
            continue
        if not _ran(step):
            summary["ok"] = False
            for host in ids:
                if hosts[host]["result"] == "skipped" and not hosts[host]["step"]:
                    hosts[host]["step"] = step_id
            continue
        if step.get("result") is False and not summary["stopped_at"]:
            summary.update(ok=False, stopped_at=step_id)
        rets = (step.get("changes") or {}).get("ret") or {}
        for host in ids:
            entry, ret = hosts[host], rets.get(host)
            if not verify and kind != "test":
                entry["changes"] = _changed(ret)
            failure = _failure(ret, verify, step)
            if failure:
                entry.update(result="failed", step=step_id, state=failure[0], comment=failure[1])
            elif entry["result"] != "failed" and kind != "test":
                entry.update(result="fixed" if verify else "unverified", step=step_id)
    summary["hosts"] = list(hosts.values())
    return summary


def render(summary, mask=None, colors=None):
    """The summary as text lines; ``mask`` (``serverfix_mask.text``) is applied to every
    comment (without one a comment is not shown)."""
    colors = colors or {}
    reset = colors.get("ENDC", "")
    paint = {"fixed": "GREEN", "failed": "RED", "skipped": "YELLOW"}

    def masked(text):
        if mask is None:
            return "<secret> (salt-run saltutil.sync_utils on the master shows it masked)"
        return mask(text)

    counts = {}
    for entry in summary["hosts"]:
        counts[entry["result"]] = counts.get(entry["result"], 0) + 1
    counted = ", ".join(f"{counts[k]} {k}" for k in ("fixed", "failed", "skipped") if k in counts)
    if summary["ok"]:
        head = f"serverfix rollout: OK ({counted or 'no hosts'})"
    elif summary["problem"] is not None:
        head = "serverfix rollout: STOPPED before anything changed (rollout/targets)"
    else:
        head = f"serverfix rollout: STOPPED at {summary['stopped_at']} ({counted})"
    lines = [head]
    if summary["problem"] is not None:
        lines += ["  " + line for line in masked(summary["problem"]).splitlines()]
    if summary["hosts"]:
        lines.append(f"  {'HOST':<{HOST_WIDTH}} {'RESULT':<8} {'CHANGES':<8} STEP")
    indent = " " * (2 + HOST_WIDTH + 1)
    for entry in summary["hosts"]:
        result = entry["result"]
        color = colors.get(paint.get(result, ""), "")
        shown = f"{color}{result:<8}{reset}" if color else f"{result:<8}"
        changes = str(entry["changes"]) if result != "skipped" else "-"
        step = entry["step"] + (" (not run)" if result == "skipped" else "")
        lines.append(f"  {entry['host']:<{HOST_WIDTH}} {shown} {changes:<8} {step}")
        if result == "failed":
            lines.append(f"{indent}state:   {entry['state']}")
            comment = masked(entry["comment"]).splitlines() or [""]
            lines.append(f"{indent}comment: {comment[0]}")
            lines += [f"{indent}         {line}" for line in comment[1:]]
    return lines


def output(data, **kwargs):  # pylint: disable=unused-argument
    """
    The highstate output of the orchestration, then the rollout's per-host summary.
    """
    # out_format gives opts["output"] precedence: that is this outputter, so name another one
    opts = dict(__opts__, output="highstate")
    running = running_of(data)
    if running is None:
        return salt.output.out_format(data, "highstate", opts)
    text = _masker(__opts__)
    inner = data["data"] if "outputter" in data else data
    if text is not None:
        highstate = salt.output.out_format(masked_data(inner, text), "highstate", opts)
    else:
        highstate = "(highstate output left out: salt-run saltutil.sync_utils shows it masked)"
    colors = salt.utils.color.get_colors(__opts__.get("color"), __opts__.get("color_theme"))
    lines = render(summarize(running), text, colors)
    return highstate.rstrip("\n") + "\n\n" + "\n".join(lines)
