"""
diagnose/verify without the formula's other modules, and the report outputter on its own.

The module is imported by path and given a loader that has none of the other modules (no
dotenv, pm2, redis_server, service, pkg, cp): what a minion sees when saltutil.sync_modules was
not run. Every probe must become a clear "not available" finding instead of an exception.
"""

import json

import pytest
import salt.config

from tests.conftest import deep_merge
from tests.support.loader import DEFAULTS, import_salt_module
from tests.support.paths import MODULES_DIR, REPO

serverfix = import_salt_module(MODULES_DIR / "serverfix.py", "serverfix_test_diag_unit")
serverfix_defaults = import_salt_module(REPO / "_utils" / "serverfix_defaults.py", "serverfix_test_defaults_util")
serverfix_files = import_salt_module(REPO / "_utils" / "serverfix_files.py", "serverfix_test_files_util")
serverfix_size = import_salt_module(REPO / "_utils" / "serverfix_size.py", "serverfix_test_size_util")
report_output = import_salt_module(REPO / "_output" / "serverfix_report.py", "serverfix_test_report_output")


@pytest.fixture
def configure_loader_modules():
    return {serverfix: {"__salt__": {}, "__context__": {}, "__opts__": {},
                        "__pillar__": {"serverfix": {"queue": {"concurrency": 7}}},
                        "__utils__": {"serverfix_defaults.defaults": serverfix_defaults.defaults,
                                      "serverfix_files.meminfo": serverfix_files.meminfo,
                                      "serverfix_files.tail_lines": serverfix_files.tail_lines,
                                      "serverfix_size.parse_size": serverfix_size.parse_size}}}


@pytest.fixture
def config(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("QUEUE_ENABLED=true\n", encoding="utf-8")
    return deep_merge(DEFAULTS, {"dotenv": {"file": str(env_file)}, "pm2": {"home": str(tmp_path / "pm2")}})


def test_diagnose_without_the_other_modules(config):
    report = serverfix.diagnose(config=config)
    found = {f["id"]: f for f in report["findings"]}
    assert "dotenv execution module is not available" in found["env-unreadable"]["title"]
    assert "pm2 execution module is not available" in found["pm2-unavailable"]["title"]
    assert "redis_server execution module is not available" in found["redis-unchecked"]["title"]
    assert "saltutil.sync_modules" in found["env-unreadable"]["title"]
    json.dumps(report)


def test_verify_without_the_other_modules(config):
    report = serverfix.verify(config=config, set_retcode=False)
    status = {c["id"]: c["status"] for c in report["checks"]}
    assert status["redis-ping"] == "fail" and status["pm2-online"] == "fail" and status["env-keys"] == "fail"
    assert report["ok"] is False


def test_without_config_the_pillar_is_merged_over_the_shipped_defaults():
    # no file server needed (a salt-ssh target has none): the defaults travel with _utils
    settings, errors, source = serverfix._settings(None)  # pylint: disable=protected-access
    assert errors == [] and source == "pillar"
    assert settings == deep_merge(DEFAULTS, {"queue": {"concurrency": 7}})


def test_settings_merge_like_map_jinja():
    merged = serverfix._merge_settings(  # pylint: disable=protected-access
        DEFAULTS, {"redis": {"port": 6380, "bind": "127.0.0.1"}, "remove_processes": "prisma-studio", "queue": 3})
    assert merged["redis"]["port"] == 6380
    assert merged["redis"]["bind"] == DEFAULTS["redis"]["bind"]  # a string where a list belongs: default kept
    assert merged["remove_processes"] == DEFAULTS["remove_processes"]
    assert merged["queue"] == DEFAULTS["queue"]


def test_secrets_are_scrubbed_everywhere():
    data = {"a": ["x hunter22 y", {"b": "hunter22"}], "c": 5}
    assert serverfix._scrub(data, {"hunter22"}) == {  # pylint: disable=protected-access
        "a": ["x <secret> y", {"b": "<secret>"}], "c": 5}


SAMPLE = {
    "function": "verify", "version": 1, "ok": False, "duration_ms": 12,
    "counts": {"fail": 1, "warn": 0, "pass": 1, "skip": 0, "info": 0},
    "settings": {"env_file": "/srv/.env"},
    "checks": [
        {"id": "redis-ping", "status": "fail", "title": "PING 127.0.0.1:6379 -> Connection refused",
         "evidence": {"host": "127.0.0.1", "port": 6379, "listening": []},
         "fix": {"state": "serverfix.redis", "pillar": "serverfix:redis", "hint": ""}},
        {"id": "pm2-online", "status": "pass", "title": "1 app(s) online", "evidence": {"apps": {"x": "online"}},
         "fix": {"state": None, "pillar": None, "hint": ""}},
    ],
}


def test_render_table():
    lines = report_output.render(SAMPLE, width=100)
    assert lines[0] == "serverfix.verify: FAILED (1 fail, 1 pass; 12 ms)"
    text = "\n".join(lines)
    assert "FAIL      redis-ping" in text and "PASS      pm2-online" in text
    assert "evidence: host=127.0.0.1 port=6379 listening=[]" in text
    assert "fix:      state serverfix.redis · pillar serverfix:redis" in text
    assert "apps.x" not in text  # passing checks show no evidence
    assert all(len(line) <= 100 for line in lines if "env_file" not in line)


def test_output_per_minion_and_fallback():
    opts = salt.config.minion_config(None)
    opts["color"] = False
    report_output.__opts__ = opts
    text = report_output.output({"web1": SAMPLE, "web2": "Minion did not return"})
    assert text.startswith("web1: serverfix.verify: FAILED")
    assert "web2" in text and "Minion did not return" in text
