"""
serverfix.diagnose on pm2's logs, against a real pm2 (own PM2_HOME): a log over
serverfix:pm2:log_warn_size is a warning, no rotation (neither the pm2-logrotate module nor a
logrotate rule for the PM2_HOME) is reported; nothing is changed.
"""

import json

from tests.support.backend import IDLE_APP
from tests.support.diagnose import problems, settings
from tests.support.loader import import_salt_module
from tests.support.paths import UTILS_DIR

PM2BOOT = import_salt_module(UTILS_DIR / "serverfix_pm2boot.py", "serverfix_pm2boot_t")


def _config(pm2, **pm2_settings):
    return settings(
        pm2=dict({"home": str(pm2.home), "bin": pm2.bin}, **pm2_settings),
        backend={"name": "logs-app"},
        remove_processes=[],
    )


def test_large_and_unrotated_logs_are_reported(modules, pm2):
    pm2.start("logs-app", IDLE_APP)
    try:
        out = pm2.log_path("logs-app")
        with open(out, "a", encoding="utf-8") as handle:
            handle.write("x" * 3000 + "\n")
        size = out.stat().st_size
        report = modules.serverfix.diagnose(config=_config(pm2, log_warn_size="2K"))
        found = {f["id"]: f for f in report["findings"]}
        assert problems(report).get("pm2-logs-large") == "warning", report["findings"]
        large = found["pm2-logs-large"]
        assert (
            str(out) in large["evidence"]["large_mb"] and "no rotation in place" in large["title"]
        )
        assert large["evidence"]["rotation"] == {"pm2_logrotate": False, "logrotate_rules": []}
        assert found["pm2-logs-unrotated"]["severity"] == "info"
        assert "pm2 install pm2-logrotate" in found["pm2-logs-unrotated"]["fix"]["hint"]
        assert out.stat().st_size == size  # nothing changed

        # the default threshold (100M): no warning, the missing rotation still reported
        report = modules.serverfix.diagnose(config=_config(pm2))
        assert "pm2-logs-large" not in problems(report)
        assert "pm2-logs-unrotated" in {f["id"] for f in report["findings"]}

        # pm2-logrotate installed (its settings in module_conf.json): a rotation is in place
        conf = pm2.home / "module_conf.json"
        conf.write_text(json.dumps({"pm2-logrotate": {"max_size": "10M"}}), encoding="utf-8")
        try:
            report = modules.serverfix.diagnose(config=_config(pm2, log_warn_size="2K"))
        finally:
            conf.unlink()
        ids = {f["id"] for f in report["findings"]}
        assert "pm2-logs-unrotated" not in ids and "pm2-logs-large" in ids
        large = next(f for f in report["findings"] if f["id"] == "pm2-logs-large")
        assert large["evidence"]["rotation"]["pm2_logrotate"] is True
        assert "no rotation in place" not in large["title"]
    finally:
        pm2.delete("logs-app")


def test_a_logrotate_rule_for_the_pm2_home_counts(tmp_path):
    rules = tmp_path / "logrotate.d"
    rules.mkdir()
    (rules / "nginx").write_text("/var/log/nginx/*.log {\n  daily\n}\n", encoding="utf-8")
    assert PM2BOOT.rotation("/root/.pm2", logrotate_dir=str(rules))["logrotate_rules"] == []
    # what `pm2 logrotate -u root` writes
    (rules / "pm2-root").write_text(
        "/root/.pm2/pm2.log /root/.pm2/logs/*.log {\n  rotate 12\n  copytruncate\n}\n",
        encoding="utf-8",
    )
    found = PM2BOOT.rotation("/root/.pm2/", logrotate_dir=str(rules))
    assert found == {"pm2_logrotate": False, "logrotate_rules": [str(rules / "pm2-root")]}
    assert PM2BOOT.rotation("/home/x/.pm2", ["pm2-logrotate"], str(rules))["pm2_logrotate"]
