"""Preflight through the real loader: valid defaults pass, every kind of bad pillar is named."""

import pytest

from tests.support.loader import DEFAULTS


def test_defaults_are_valid(modules):
    assert modules.serverfix.validate_pillar(DEFAULTS) == []


@pytest.mark.parametrize(
    "pillar, expected",
    [
        ({"redis": {"port": "abc"}}, "serverfix:redis:port: 'abc' is not valid; expected an integer from 1 to 65535"),
        ({"redis": {"port": 70000}}, "serverfix:redis:port: 70000 is not valid"),
        ({"swap": {"size": "2X"}}, "serverfix:swap:size: '2X' is not valid; expected a size such as 2G"),
        ({"queue": {"concurrency": -1}}, "serverfix:queue:concurrency: -1 is not valid"),
        ({"dotenv": {"extra": {"BAD KEY": "x"}}}, "serverfix:dotenv:extra: {'BAD KEY': 'x'} is not valid"),
        ({"redis": {"host": "127.0.0.1\nevil"}}, "serverfix:redis:host: '127.0.0.1\\nevil' is not valid"),
        ({"redis": {"password": "top\nsecret"}}, "serverfix:redis:password: <secret> is not valid"),
        ({"reddis": {}}, "serverfix:reddis: unknown key (did you mean 'redis'?)"),
        ({"redis": {"prot": 1}}, "serverfix:redis:prot: unknown key (did you mean 'port'?)"),
        ({"backend": {"restart": "yes"}}, "serverfix:backend:restart: 'yes' is not valid; expected true or false"),
        ({"remove_processes": ["all"]}, "serverfix:remove_processes: ['all'] is not valid"),
        ({"redis": "x"}, "serverfix:redis: 'x' is not valid; expected a mapping"),
        ({"dotenv": {"extra": {"REDIS_HOST": "::1"}}}, "not one the formula sets from serverfix:redis/queue"),
    ],
)
def test_bad_pillar_is_named(modules, pillar, expected):
    errors = modules.serverfix.validate_pillar(pillar)
    assert any(expected in error for error in errors), errors


def test_secret_never_echoed(modules):
    errors = modules.serverfix.validate_pillar({"redis": {"password": "hunter2 x"}})
    assert errors and all("hunter2" not in e for e in errors)


def test_localhost_pitfall_detected(modules):
    msg = modules.serverfix.check_redis_host("::1", ["127.0.0.1"])
    assert "IPv4/IPv6" in msg and "serverfix:redis:host" in msg
    assert modules.serverfix.check_redis_host("127.0.0.1", ["127.0.0.1", "-::1"]) == ""


@pytest.mark.parametrize("size, expected", [("2G", 2 << 30), ("512M", 512 << 20), ("64MiB", 64 << 20), (4096, 4096)])
def test_parse_size(loaders, size, expected):
    assert loaders.utils["serverfix_size.parse_size"](size) == expected


def test_preflight_checks_only_the_phases_given(modules, tmp_path):
    config = {**DEFAULTS, "dotenv": {**DEFAULTS["dotenv"], "file": str(tmp_path / "missing" / ".env")},
              "remove_processes": [], "swap": {**DEFAULTS["swap"], "enabled": False}}
    assert modules.serverfix.preflight(config, pillar={}, phases=["preflight", "redis"]) == []
    errors = modules.serverfix.preflight(config, pillar={}, phases=["redis", "env"])
    assert len(errors) == 1 and str(tmp_path / "missing" / ".env") in errors[0]
    assert modules.serverfix.preflight(config, pillar={}) == errors  # None: every phase
