"""
Inputs and readers for the diagnose/verify tests: the settings they pass, a file in
``/proc/swaps``' format, and the findings/checks of a report.

``fake_proc_swaps``: swap is kernel-global and other tests turn it on and off at the same time,
so "no swap" cannot be produced reliably for real here; diagnose reads this file through its
``proc_swaps`` parameter instead.
"""

from pathlib import Path

from tests.support.loader import merge_settings

SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"


def fake_proc_swaps(path, entries=()):
    """A file in /proc/swaps' format with ``entries`` of ``(file, size_kib)``."""
    lines = [f"{name}\t\t\t\tfile\t\t{size}\t\t0\t\t-2\n" for name, size in entries]
    Path(path).write_text(SWAPS_HEADER + "".join(lines), encoding="utf-8")
    return str(path)


def settings(**sections):
    """The merged settings (defaults.yaml + the given sections), as map.jinja renders them."""
    return merge_settings(sections)


def problems(report):
    """``{id: severity}`` of the critical and warning findings."""
    return {f["id"]: f["severity"] for f in report["findings"] if f["severity"] != "info"}


def statuses(report):
    return {c["id"]: c["status"] for c in report["checks"]}
