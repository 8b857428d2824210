"""
serverfix_report: ``serverfix.diagnose`` and ``serverfix.verify`` as a table for a person.

The default outputter of both functions (their ``__outputter__``); ``--out=json`` gives the
structured data (shape documented in ``_modules/serverfix.py``). One block per minion:
a summary line, then one row per finding/check with its severity or status, the evidence
(for problems) and the fix. Anything that is not such a report is printed by ``nested``.

.. code-block:: bash

    salt-call serverfix.diagnose                     # this table
    salt '*' serverfix.verify --out=serverfix_report   # the same for every minion
"""

import shutil
import textwrap
from typing import TYPE_CHECKING, Any

import salt.output
import salt.utils.color

if TYPE_CHECKING:
    __opts__: dict[str, Any]

__virtualname__ = "serverfix_report"

LABELS = {
    "critical": ("CRITICAL", "RED"),
    "warning": ("WARNING", "YELLOW"),
    "info": ("info", "CYAN"),
    "fail": ("FAIL", "RED"),
    "warn": ("WARN", "YELLOW"),
    "pass": ("PASS", "GREEN"),
    "skip": ("skip", "CYAN"),
    "info-check": ("info", "CYAN"),
}
# rows whose evidence and fix are worth a person's time
DETAILED = {"critical", "warning", "fail", "warn"}
ID_WIDTH = 26


def __virtual__():
    return __virtualname__


def _is_report(value):
    return (
        isinstance(value, dict)
        and value.get("function") in ("diagnose", "verify")
        and "counts" in value
    )


def _flatten(value, prefix=""):
    """``key=value`` pairs of nested evidence, in their order."""
    if isinstance(value, dict):
        pairs = []
        for key, sub in value.items():
            pairs += _flatten(sub, f"{prefix}.{key}" if prefix else str(key))
        return pairs
    if isinstance(value, list):
        shown = ",".join(
            str(v) if not isinstance(v, dict) else " ".join(_flatten(v)) for v in value
        )
        return [f"{prefix}=[{shown}]"]
    if value is None or value == "":
        return []
    return [f"{prefix}={value}"]


def _fix_text(fix):
    parts = []
    if fix.get("state"):
        parts.append(f"state {fix['state']}")
    if fix.get("pillar"):
        parts.append(f"pillar {fix['pillar']}")
    if fix.get("hint"):
        parts.append(fix["hint"])
    return " · ".join(parts)


def _summary(report):
    counts = report["counts"]
    shown = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    verdict = (
        "OK"
        if report["ok"]
        else ("problems found" if report["function"] == "diagnose" else "FAILED")
    )
    counted = shown or "nothing to report"
    return f"serverfix.{report['function']}: {verdict} ({counted}; {report['duration_ms']} ms)"


def render(report, colors=None, width=None):
    """The report as text lines (no colors unless ``colors`` is a salt color map)."""
    colors = colors or {}
    width = width or max(80, min(160, shutil.get_terminal_size((120, 24)).columns))
    reset = colors.get("ENDC", "")
    items = report.get("findings") if report["function"] == "diagnose" else report.get("checks")
    kind = "severity" if report["function"] == "diagnose" else "status"
    settings = report.get("settings") or {}
    lines = [_summary(report)]
    if settings:
        lines.append("  " + " · ".join(f"{key} {value}" for key, value in settings.items()))
    lines.append("")
    lines.append(
        f"  {kind.upper():<9} {'ID':<{ID_WIDTH}} {'FINDING' if kind == 'severity' else 'CHECK'}"
    )
    indent = " " * (2 + 10 + ID_WIDTH + 1)
    wrap = textwrap.TextWrapper(
        width=width, subsequent_indent=indent, break_long_words=True, break_on_hyphens=False
    )
    for item in items or []:
        level = item[kind]
        label, color = LABELS.get(
            "info-check" if level == "info" and kind == "status" else level, (level, "")
        )
        paint = colors.get(color, "")
        row = wrap.fill(f"  {label:<9} {item['id']:<{ID_WIDTH}} {item['title']}")
        lines.append(
            row.replace(f"  {label:<9}", f"  {paint}{label:<9}{reset}", 1) if paint else row
        )
        if level in DETAILED:
            evidence = " ".join(_flatten(item.get("evidence") or {}))
            if evidence:
                lines.append(wrap.fill(indent + "evidence: " + evidence))
            fix = _fix_text(item.get("fix") or {})
            if fix:
                lines.append(wrap.fill(indent + "fix:      " + fix))
    return lines


def output(data, **kwargs):  # pylint: disable=unused-argument
    """
    Print each minion's diagnose/verify report as a table; anything else as ``nested``.
    """
    colors = salt.utils.color.get_colors(__opts__.get("color"), __opts__.get("color_theme"))
    if _is_report(data):
        data = {"": data}
    if not isinstance(data, dict):
        return salt.output.out_format(data, "nested", __opts__)
    blocks = []
    for minion, value in data.items():
        if _is_report(value):
            lines = render(value, colors)
            blocks.append((f"{minion}: " if minion else "") + "\n".join(lines))
        else:
            blocks.append(salt.output.out_format({minion: value}, "nested", __opts__))
    return "\n\n".join(blocks)
