"""The main job's readable summary and its JSON file, from what the steps recorded."""

import json
import os
from pathlib import Path

from tools.mainjob.steps import STEPS

REPORT_FILE = Path(
    os.environ.get("SERVERFIX_E2E_REPORT")
    or Path(os.environ.get("REPLICA_DIR", "/var/cache/serverfix/replica")) / "last-run.json"
)
TITLES = {key: title for key, title, _ in STEPS}
TITLES["master_minion"] = "salt-master + salt-minion (salt hetzner state.apply serverfix)"
TITLES["fleet_rollout"] = "rollout over a fleet (salt-run state.orchestrate serverfix.orch.rollout)"
TITLES["fleet_canary_fault"] = "rollout with a fault on the canary"


def summary_lines(report):
    """One block per step that ran: its title, then the lines it recorded."""
    steps = report.get("steps", {})
    lines = []
    if "replica" in report:
        lines.append(f"replica: booted in {report['replica'].get('up_seconds')} s")
    if "fleet" in report:
        lines.append(f"fleet: booted side by side in {report['fleet'].get('up_seconds')} s")
    for key, title in TITLES.items():
        if key not in steps:
            continue
        lines.append(f"{title}:")
        lines.extend(f"    {text}" for text in steps[key].get("lines", []))
    return lines


def write_report(report, path=REPORT_FILE):
    """Write ``report`` as JSON to ``path`` (parents made); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path
