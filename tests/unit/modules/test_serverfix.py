"""
diagnose/verify without the formula's other modules, the settings merge against map.jinja, the
generated defaults, and the report outputter on its own.

The module and its _utils are imported by path and given a loader that has none of the other
modules (no dotenv, pm2, redis_server, service, pkg, cp): what a minion sees when
saltutil.sync_modules was not run. Every probe must become a clear "not available" finding
instead of an exception.
"""

import json
import os
import subprocess
import sys

import jinja2
import pytest
import salt.config
from salt.utils.jinja import SerializerExtension

from tests.support.loader import DEFAULTS, import_salt_module, merge_settings, utils_dunder
from tests.support.paths import FORMULA_ROOT, MODULES_DIR, REPO, UTILS_DIR

serverfix = import_salt_module(MODULES_DIR / "serverfix.py", "serverfix_test_diag_unit")
report_output = import_salt_module(
    REPO / "_output" / "serverfix_report.py", "serverfix_test_report_output"
)
UTIL_NAMES = (
    "serverfix_defaults",
    "serverfix_files",
    "serverfix_size",
    "serverfix_pillar",
    "serverfix_schema",
    "serverfix_settings",
    "serverfix_mask",
    "serverfix_facts",
    "serverfix_findings",
    "serverfix_checks",
    "serverfix_npm",
    "serverfix_errors",
    "serverfix_pm2boot",
    "serverfix_redisversion",
    "serverfix_redismem",
    "serverfix_redisreport",
)
UTILS = utils_dunder(*UTIL_NAMES)


@pytest.fixture
def configure_loader_modules():
    pillar = {"serverfix": {"queue": {"concurrency": 7}}}
    return {
        serverfix: {
            "__salt__": {},
            "__context__": {},
            "__opts__": {},
            "__pillar__": pillar,
            "__utils__": UTILS,
        },
    }


@pytest.fixture
def config(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("QUEUE_ENABLED=true\n", encoding="utf-8")
    return merge_settings(
        {"dotenv": {"file": str(env_file)}, "pm2": {"home": str(tmp_path / "pm2")}}
    )


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
    assert (
        status["redis-ping"] == "fail"
        and status["pm2-online"] == "fail"
        and status["env-keys"] == "fail"
    )
    assert report["ok"] is False


def test_without_config_the_pillar_is_merged_over_the_shipped_defaults():
    # no file server needed (a salt-ssh target has none): the defaults travel with _utils
    pillar = {"serverfix": {"queue": {"concurrency": 7}}}
    settings, errors, source = UTILS["serverfix_settings.load"](None, pillar, UTILS)
    assert errors == [] and source == "pillar"
    assert settings == merge_settings({"queue": {"concurrency": 7}})
    assert UTILS["serverfix_defaults.defaults"]() == DEFAULTS


def test_settings_merge_keeps_defaults_for_values_of_the_wrong_kind():
    merged = merge_settings(
        {
            "redis": {"port": 6380, "bind": "127.0.0.1"},
            "remove_processes": "prisma-studio",
            "queue": 3,
        }
    )
    assert merged["redis"]["port"] == 6380
    assert (
        merged["redis"]["bind"] == DEFAULTS["redis"]["bind"]
    )  # a string where a list belongs: default kept
    assert merged["remove_processes"] == DEFAULTS["remove_processes"]
    assert merged["queue"] == DEFAULTS["queue"]


@pytest.mark.parametrize(
    "pillar, keep",
    [
        ({}, 5),
        ({"backups": {"keep": 8}}, 8),
        ({"dotenv": {"backup_keep": 3}}, 3),
        ({"backups": {"keep": 8}, "dotenv": {"backup_keep": 3}}, 8),
        ({"backups": "x", "dotenv": {"backup_keep": 2}}, 2),
    ],
)
def test_backups_keep_with_its_deprecated_alias(pillar, keep):
    merged = merge_settings(pillar)
    assert merged["backups"]["keep"] == keep and merged["dotenv"]["backup_keep"] == keep


def _render_map(pillar):
    """map.jinja rendered with plain Jinja2 and Salt's serializer tags, ``salt['pillar.get']``
    faked."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(FORMULA_ROOT)),
        extensions=["jinja2.ext.do", SerializerExtension],
    )
    template = env.from_string(
        '{%- set tpldir = "serverfix" %}'
        '{%- from "serverfix/map.jinja" import serverfix, state_config, managed_env with context %}'
        '{{ {"serverfix": serverfix, "state_config": state_config, "managed_env": managed_env}'
        " | json(sort_keys=False) }}"
    )
    return json.loads(template.render(salt={"pillar.get": lambda key, default=None: pillar}))


MAP_PILLARS = [
    {},
    {
        "redis": {"port": 6380, "password": "pw-1234", "bind": ["127.0.0.1"]},
        "queue": {"enabled": False},
    },
    {"dotenv": {"extra": {"SESSION_TIMEOUT": 3600}, "backup_keep": 3}, "remove_processes": []},
    {
        "backups": {"keep": 9},
        "dotenv": {"backup_keep": 2},
        "swap": {"size": "1G", "enabled": False},
    },
    # wrong kinds: a string for a mapping or a list, a mapping for a scalar, a list for a mapping
    {
        "redis": "x",
        "remove_processes": "prisma-studio",
        "queue": {"concurrency": {"a": 1}},
        "pm2": ["root"],
    },
    {"backend": {"ready_patterns": "ready", "restart": True}, "verify": None, "backups": "3"},
    # missing or empty sections and unknown keys
    {"redis": {}, "dotenv": None, "unknown": {"a": 1}, "swap": {"typo": 1}},
    "not a mapping",
    # integers as strings: plain decimals become ints, anything else stays for the preflight
    {
        "swap": {"swappiness": "10", "vfs_cache_pressure": "010"},
        "redis": {"port": "٦٣٧٩", "db": "0"},
    },
]


@pytest.mark.parametrize("pillar", MAP_PILLARS, ids=range(len(MAP_PILLARS)))
def test_map_jinja_merges_like_the_python_merge(pillar):
    rendered = _render_map(pillar)
    merged = UTILS["serverfix_settings.merge"](UTILS["serverfix_defaults.defaults"](), pillar)
    assert rendered["serverfix"] == merged
    # the managed .env keys in the same order, with the same values (password, extra: references)
    values = UTILS["serverfix_settings.env_values"](
        merged, UTILS["serverfix_defaults.managed_env"]()
    )
    assert list(rendered["managed_env"]) == list(values)
    for key, value in rendered["managed_env"].items():
        if isinstance(value, dict):
            assert value == {
                "pillar": "serverfix:redis:password"
                if key == "REDIS_PASSWORD"
                else f"serverfix:dotenv:extra:{key}"
            }
        else:
            assert str(value) == values[key], key


def test_generated_defaults_and_pillar_example_are_fresh():
    # defaults.yaml is the one source: --check fails when _utils/serverfix_defaults.py or
    # pillar.example were not regenerated after an edit
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen-defaults.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "backups:keep" in (REPO / "pillar.example").read_text(encoding="utf-8")


def test_schema_knows_every_default_and_the_managed_keys():
    schema = UTILS["serverfix_schema.pillar_schema"](UTILS["serverfix_size.parse_size"], {})
    assert {s: set(v) if isinstance(v, dict) else None for s, v in schema.items()} == {
        s: set(v) if isinstance(v, dict) else None for s, v in DEFAULTS.items()
    }
    assert list(UTILS["serverfix_defaults.managed_env"]()) == [
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_PASSWORD",
        "REDIS_DB",
        "QUEUE_ENABLED",
        "QUEUE_CONCURRENCY",
    ]
    assert UTILS["serverfix_schema.validate"](DEFAULTS, UTILS) == []


def test_secrets_are_scrubbed_everywhere():
    data = {"a": ["x hunter22 y", {"b": "hunter22"}], "c": 5}
    assert UTILS["serverfix_facts.scrub"](data, {"hunter22"}) == {
        "a": ["x <secret> y", {"b": "<secret>"}],
        "c": 5,
    }


def test_verify_never_shows_extra_or_old_values(tmp_path, monkeypatch):
    # issue 12, item 13: dotenv:extra values and the old values read from the .env stay hidden
    env_file = tmp_path / ".env"
    env_file.write_text(
        "SMTP_PASS=old-smtp-pw-1\nDB_PASS=old-db-pw-2\nDATABASE_URL=postgres://app:oldpw3@h/db\n"
        "REDIS_HOST=redis://:hostpw4@127.0.0.1\nREDIS_PASSWORD=''\n",
        encoding="utf-8",
    )
    extra = {
        "SMTP_PASS": "new-smtp-5",
        "DB_PASS": "new-db-6",
        "DATABASE_URL": "postgres://app:pw7@host/db",
    }
    cfg = merge_settings(
        {
            "dotenv": {"file": str(env_file), "extra": extra},
            "pm2": {"home": str(tmp_path / "pm2")},
            "redis": {"password": "redis-pw-8"},
        }
    )
    dotenv_util = import_salt_module(UTILS_DIR / "serverfix_dotenv.py", "serverfix_dotenv_diag")
    monkeypatch.setitem(
        serverfix.__salt__, "dotenv.read", lambda path: dotenv_util.parse(open(path, "rb").read())
    )
    text = json.dumps(
        [serverfix.verify(config=cfg, set_retcode=False), serverfix.diagnose(config=cfg)]
    )
    for secret in (
        "old-smtp-pw-1",
        "old-db-pw-2",
        "oldpw3",
        "hostpw4",
        "new-smtp-5",
        "new-db-6",
        "pw7",
        "redis-pw-8",
    ):
        assert secret not in text
    env_check = next(c for c in json.loads(text)[0]["checks"] if c["id"] == "env-keys")
    different = env_check["evidence"]["different"]
    assert different["SMTP_PASS"] == {"found": "<secret>", "wanted": "<secret>"}
    assert different["REDIS_PASSWORD"] == {"found": "", "wanted": "<secret>"}  # item 14
    assert different["REDIS_HOST"]["found"] == "redis://:<secret>@127.0.0.1"


SAMPLE = {
    "function": "verify",
    "version": 1,
    "ok": False,
    "duration_ms": 12,
    "counts": {"fail": 1, "warn": 0, "pass": 1, "skip": 0, "info": 0},
    "settings": {"env_file": "/srv/.env"},
    "checks": [
        {
            "id": "redis-ping",
            "status": "fail",
            "title": "PING 127.0.0.1:6379 -> Connection refused",
            "evidence": {"host": "127.0.0.1", "port": 6379, "listening": []},
            "fix": {"state": "serverfix.redis", "pillar": "serverfix:redis", "hint": ""},
        },
        {
            "id": "pm2-online",
            "status": "pass",
            "title": "1 app(s) online",
            "evidence": {"apps": {"x": "online"}},
            "fix": {"state": None, "pillar": None, "hint": ""},
        },
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


def _old_backups(path, *stamps):
    made = []
    for stamp in stamps:
        name = f"{path}.{stamp}.bak"
        with open(name, "w", encoding="utf-8") as handle:
            handle.write("OLD=1\n")
        made.append(name)
    return made


def test_diagnose_lists_backups_left_next_to_the_files(tmp_path):
    env_file = tmp_path / "app" / ".env"
    env_file.parent.mkdir()
    env_file.write_text("QUEUE_ENABLED=true\n", encoding="utf-8")
    redis_conf = tmp_path / "etc" / "redis.conf"
    redis_conf.parent.mkdir()
    redis_conf.write_text("port 6379\n", encoding="utf-8")
    beside = _old_backups(env_file, "serverfix-20250101T000000", "failed-20250102T000000")
    beside += _old_backups(redis_conf, "serverfix-20250103T000000")
    backup_dir = str(tmp_path / "backups")
    pillar = {
        "dotenv": {"file": str(env_file)},
        "redis": {"config": str(redis_conf)},
        "swap": {"enabled": False},
        "backups": {"dir": backup_dir},
    }
    report = serverfix.diagnose(config=merge_settings(pillar))
    [found] = [f for f in report["findings"] if f["id"] == "backups-beside-files"]
    assert found["severity"] == "warning"  # two sit in the app directory
    assert sorted(found["evidence"]["files"]) == sorted(beside)
    assert f"2 in the app directory {env_file.parent}/" in found["title"]
    assert found["fix"]["pillar"] == "serverfix:backups:dir"
    assert "move them out of the app directory" in found["fix"]["hint"]
    assert f"mv {beside[0]} {beside[1]} {backup_dir}{env_file.parent}/" in found["fix"]["hint"]
    assert all(os.path.exists(name) for name in beside)  # diagnose moves nothing
    # backups:dir '' keeps them there on purpose: no finding
    report = serverfix.diagnose(config=merge_settings({**pillar, "backups": {"dir": ""}}))
    assert "backups-beside-files" not in {f["id"] for f in report["findings"]}
    # only outside the app directory: info
    for name in beside[:2]:
        os.unlink(name)
    report = serverfix.diagnose(config=merge_settings(pillar))
    [found] = [f for f in report["findings"] if f["id"] == "backups-beside-files"]
    assert found["severity"] == "info" and found["evidence"]["files"] == beside[2:]
