"""
Preflight through the real loader: valid defaults pass, every kind of bad pillar is named. Problems
follow Salt's contract: one ``CommandExecutionError`` with every message in ``exc.info["errors"]``.
"""

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.host import immutable_dir
from tests.support.loader import DEFAULTS
from tests.support.redis import RedisServer, fake_info_server


def problems(function, *args, **kwargs):
    """The messages ``function`` raises (``[]`` when it returns ``True``)."""
    try:
        assert function(*args, **kwargs) is True
    except CommandExecutionError as exc:
        assert str(exc).startswith("\n".join(exc.info["errors"]))
        return exc.info["errors"]
    return []


def test_defaults_are_valid(modules):
    assert modules.serverfix.validate_pillar(DEFAULTS) is True


@pytest.mark.parametrize(
    "pillar, expected",
    [
        (
            {"redis": {"port": "abc"}},
            "serverfix:redis:port: 'abc' is not valid; expected an integer from 1 to 65535",
        ),
        ({"redis": {"port": 70000}}, "serverfix:redis:port: 70000 is not valid"),
        (
            {"swap": {"size": "2X"}},
            "serverfix:swap:size: '2X' is not valid; expected a size such as 2G",
        ),
        ({"queue": {"concurrency": -1}}, "serverfix:queue:concurrency: -1 is not valid"),
        (
            {"dotenv": {"extra": {"BAD KEY": "x"}}},
            "serverfix:dotenv:extra: {'BAD KEY': 'x'} is not valid",
        ),
        (
            {"redis": {"host": "127.0.0.1\nevil"}},
            "serverfix:redis:host: '127.0.0.1\\nevil' is not valid",
        ),
        ({"redis": {"password": "top\nsecret"}}, "serverfix:redis:password: <secret> is not valid"),
        ({"reddis": {}}, "serverfix:reddis: unknown key (did you mean 'redis'?)"),
        ({"redis": {"prot": 1}}, "serverfix:redis:prot: unknown key (did you mean 'port'?)"),
        (
            {"backend": {"restart": "yes"}},
            "serverfix:backend:restart: 'yes' is not valid; expected true or false",
        ),
        ({"remove_processes": ["all"]}, "serverfix:remove_processes: ['all'] is not valid"),
        ({"redis": "x"}, "serverfix:redis: 'x' is not valid; expected a mapping"),
        (
            {"dotenv": {"extra": {"REDIS_HOST": "::1"}}},
            "not one the formula sets from serverfix:redis/queue",
        ),
        (
            {"backups": {"keep": 0}},
            "serverfix:backups:keep: 0 is not valid; expected an integer from 1 to 1000",
        ),
        ({"backups": {"kept": 3}}, "serverfix:backups:kept: unknown key (did you mean 'keep'?)"),
    ],
)
def test_bad_pillar_is_named(modules, pillar, expected):
    errors = problems(modules.serverfix.validate_pillar, pillar)
    assert any(expected in error for error in errors), errors


def test_secret_never_echoed(modules):
    errors = problems(modules.serverfix.validate_pillar, {"redis": {"password": "hunter2 x"}})
    assert errors and all("hunter2" not in e for e in errors)


def test_localhost_pitfall_detected(modules):
    [msg] = problems(modules.serverfix.check_redis_host, "::1", ["127.0.0.1"])
    assert "IPv4/IPv6" in msg and "serverfix:redis:host" in msg
    assert modules.serverfix.check_redis_host("127.0.0.1", ["127.0.0.1", "-::1"]) is True


@pytest.mark.parametrize(
    "size, expected", [("2G", 2 << 30), ("512M", 512 << 20), ("64MiB", 64 << 20), (4096, 4096)]
)
def test_parse_size(loaders, size, expected):
    assert loaders.utils["serverfix_size.parse_size"](size) == expected


def test_preflight_checks_only_the_phases_given(modules, tmp_path):
    config = {
        **DEFAULTS,
        "dotenv": {**DEFAULTS["dotenv"], "file": str(tmp_path / "missing" / ".env")},
        "remove_processes": [],
        "swap": {**DEFAULTS["swap"], "enabled": False},
    }
    assert modules.serverfix.preflight(config, pillar={}, phases=["preflight", "redis"]) is True
    errors = problems(modules.serverfix.preflight, config, pillar={}, phases=["redis", "env"])
    assert len(errors) == 1 and str(tmp_path / "missing" / ".env") in errors[0]
    assert "serverfix:dotenv:file" in errors[0]  # the formula layer names the pillar key
    assert problems(modules.serverfix.preflight, config, pillar={}) == errors  # None: every phase


@pytest.mark.parametrize("phase", ["processes", "prisma_studio"])
def test_preflight_phase_3_under_either_sls_name(modules, phase):
    # Phase 3's SLS is processes.sls (prisma_studio.sls: its old name, an include alias): both ask
    # the pm2 module, whose problems the preflight prefixes with the pillar key
    config = {**DEFAULTS, "pm2": {**DEFAULTS["pm2"], "user": "serverfix-no-such-user"}}
    errors = problems(modules.serverfix.preflight, config, pillar={}, phases=[phase])
    assert errors and all(e.startswith("serverfix:pm2") for e in errors), errors
    assert modules.serverfix.preflight(config, pillar={}, phases=["redis"]) is True  # no pm2 phase


def test_preflight_stops_at_an_invalid_pillar(modules):
    errors = problems(modules.serverfix.preflight, DEFAULTS, pillar={"redis": {"port": 0}})
    assert errors == [
        "serverfix:redis:port: 0 is not valid; expected an integer from 1 to 65535 (e.g. 6379)"
    ]


@pytest.mark.parametrize(
    "pillar, expected",
    [
        ({"swap": {"swappiness": "010"}}, "serverfix:swap:swappiness: '010' is not valid"),
        ({"swap": {"swappiness": "³"}}, "serverfix:swap:swappiness: '³' is not valid"),
        ({"redis": {"port": "٦٣٧٩"}}, "serverfix:redis:port: '٦٣٧٩' is not valid"),
        ({"redis": {"db": True}}, "serverfix:redis:db: True is not valid"),
        ({"redis": {"bind": ["127.0.0.1", "999.1.1.1"]}}, "serverfix:redis:bind: "),
        ({"redis": {"bind": ["0.0.0.0"]}}, "set serverfix:redis:allow_remote: true"),
        (
            {"redis": {"bind": ["0.0.0.0"], "allow_remote": True}},
            "serverfix:redis:allow_remote: true needs serverfix:redis:password",
        ),
        (
            {"remove_processes": ["prisma-studio", "intranet-backend"]},
            "serverfix:remove_processes: 'intranet-backend' is also serverfix:backend:name",
        ),
        ({"dotenv": {"extra": {"__proto__": "x"}}}, "serverfix:dotenv:extra: "),
    ],
)
def test_issue_12_pillar_problems_are_named(modules, pillar, expected):
    errors = problems(modules.serverfix.validate_pillar, pillar)
    assert any(expected in error for error in errors), errors
    errors = problems(modules.serverfix.preflight, DEFAULTS, pillar=pillar)
    assert any(expected in error for error in errors), errors


def test_preflight_refuses_removing_the_backend_from_the_merged_settings(modules):
    config = {**DEFAULTS, "remove_processes": ["intranet-backend"]}
    [error] = problems(modules.serverfix.preflight, config, pillar={}, phases=["redis"])
    assert "serverfix:remove_processes" in error and "serverfix:backend:name" in error


def test_preflight_allows_remote_redis_with_switch_and_password(modules):
    redis = {**DEFAULTS["redis"], "bind": ["0.0.0.0"], "allow_remote": True, "password": "pw-12345"}
    pillar = {"redis": {"bind": ["0.0.0.0"], "allow_remote": True, "password": "pw-12345"}}
    config = {**DEFAULTS, "redis": redis}
    assert modules.serverfix.preflight(config, pillar=pillar, phases=["redis"]) is True


@pytest.mark.parametrize(
    "version, refused", [("14.3.2", True), ("10.0.0", True), ("16.4.5", False)]
)
def test_preflight_reads_the_backends_dotenv_version(modules, tmp_path, version, refused):
    env_file = tmp_path / "backend" / ".env"
    env_file.parent.mkdir()
    env_file.write_text("A=1\n", encoding="utf-8")
    package = tmp_path / "backend" / "node_modules" / "dotenv" / "package.json"
    package.parent.mkdir(parents=True)
    package.write_text(f'{{"name": "dotenv", "version": "{version}"}}', encoding="utf-8")
    config = {**DEFAULTS, "dotenv": {**DEFAULTS["dotenv"], "file": str(env_file)}}
    errors = problems(modules.serverfix.preflight, config, pillar={}, phases=["env"])
    if refused:
        [error] = errors
        assert error.startswith("serverfix:dotenv:npm_version: ") and version in error
        assert str(package) in error
    else:
        assert errors == []
    pinned = {**config, "dotenv": {**config["dotenv"], "npm_version": "16.0.0"}}
    assert problems(modules.serverfix.preflight, pinned, pillar={}, phases=["env"]) == []


def _fake_tool(directory, name, stdout):
    """A stand-in ``name`` on PATH that prints ``stdout`` (fault injection, see below)."""
    path = directory / name
    path.write_text(f"#!/bin/sh\ncat <<'OUT'\n{stdout}\nOUT\n", encoding="utf-8")
    path.chmod(0o755)


@pytest.mark.parametrize(
    "tools, shown",
    [
        (  # Ubuntu 22.04: no Redis yet, apt would install 6.0.16
            {
                "apt-cache": "redis-server:\n  Installed: (none)\n  Candidate: 6:6.0.16-1ubuntu1\n",
                "redis-server": None,
            },
            "Redis 6.0.16 (apt-cache policy redis-server: what apt would install: "
            "6:6.0.16-1ubuntu1)",
        ),
        (  # an old Redis already installed by hand (on PATH), apt's own is new enough
            {
                "apt-cache": "redis-server:\n  Installed: (none)\n"
                "  Candidate: 5:7.0.15-1~deb12u1\n",
                "redis-server": "Redis server v=6.0.9 sha=00000000:0 malloc=jemalloc-5.2.1",
            },
            "Redis 6.0.9 (redis-server --version: 6.0.9)",
        ),
    ],
)
def test_preflight_refuses_a_redis_older_than_bullmq_needs(
    modules, tmp_path, monkeypatch, tools, shown
):
    # Fault injection: this machine has a real Redis 7.x (new enough), so a too-old one is faked
    # by stand-in `apt-cache`/`redis-server` scripts first on PATH (for this process only; a
    # tool given as None is hidden by a PATH without the system directories).
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, stdout in tools.items():
        if stdout is not None:
            _fake_tool(fake, name, stdout)
    (fake / "sh").symlink_to("/bin/sh")
    (fake / "cat").symlink_to("/bin/cat")
    monkeypatch.setenv("PATH", str(fake))
    conf = tmp_path / "redis.conf"  # Redis not configured yet: nothing else to refuse
    config = {**DEFAULTS, "redis": {**DEFAULTS["redis"], "config": str(conf)}}
    errors = problems(modules.serverfix.preflight, config, pillar={}, phases=["redis"])
    [error] = [e for e in errors if "min_version" in e]
    assert error.startswith(f"serverfix:redis:min_version: {shown} is older than 6.2"), error
    assert "BullMQ" in error and "packages.redis.io" in error and "backport" in error
    assert not conf.exists()  # nothing changed
    # the minimum is the pillar's: lowered, or '' (no check), the same Redis passes
    for minimum in ("6.0", ""):
        lowered = {**config, "redis": {**config["redis"], "min_version": minimum}}
        assert not [
            e
            for e in problems(modules.serverfix.preflight, lowered, pillar={}, phases=["redis"])
            if "min_version" in e
        ]


def test_preflight_accepts_this_machines_redis(loaders, modules, tmp_path):
    config = {**DEFAULTS, "redis": {**DEFAULTS["redis"], "config": str(tmp_path / "r.conf")}}
    assert modules.serverfix.preflight(config, pillar={}, phases=["redis"]) is True
    # the real redis-server and package (Debian 12: 7.0.15), read without apt-cache's second
    found = loaders.utils["serverfix_redisversion.found"]("redis-server", modules)
    assert {v["source"] for v in found} == {
        "redis-server --version",
        "dpkg: redis-server installed",
    }, found
    assert modules.serverfix.validate_pillar({"redis": {"min_version": "6.2.0"}}) is True
    [error] = problems(modules.serverfix.validate_pillar, {"redis": {"min_version": "six"}})
    assert error.startswith("serverfix:redis:min_version: 'six' is not valid")


def test_preflight_refuses_an_old_running_redis(modules, tmp_path, monkeypatch):
    # Fault injection: the Redis this machine runs is 7.x, so an old one answering INFO server
    # on the configured port is a stand-in TCP server; apt-cache and redis-server are hidden
    # (a PATH without the system directories) so only the running version counts.
    monkeypatch.setenv("PATH", str(tmp_path))
    with fake_info_server("6.0.9") as port:
        config = {
            **DEFAULTS,
            "redis": {**DEFAULTS["redis"], "config": str(tmp_path / "r.conf"), "port": port},
        }
        errors = problems(modules.serverfix.preflight, config, pillar={}, phases=["redis"])
    [error] = [e for e in errors if "min_version" in e]
    assert error.startswith(
        f"serverfix:redis:min_version: Redis 6.0.9 (running at 127.0.0.1:{port}: 6.0.9) is older "
        "than 6.2"
    ), error


def test_preflight_reads_a_running_redis(loaders, modules, tmp_path):
    with RedisServer(tmp_path) as redis:
        versions = loaders.utils["serverfix_redisversion.found"]("", modules, port=redis.port)
        config = {
            **DEFAULTS,
            "redis": {**DEFAULTS["redis"], "config": str(tmp_path / "r.conf"), "port": redis.port},
        }
        assert modules.serverfix.preflight(config, pillar={}, phases=["redis"]) is True
    running = [v for v in versions if v["source"] == f"running at 127.0.0.1:{redis.port}"]
    assert running and loaders.utils["serverfix_redisversion.at_least"](running[0]["raw"], "6.2")


def _with_backup_dir(backup_dir):
    return {**DEFAULTS, "backups": {**DEFAULTS["backups"], "dir": backup_dir}}


def test_preflight_refuses_a_backup_dir_it_cannot_make(modules, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    wanted = str(blocker / "serverfix")
    pillar = {"backups": {"dir": wanted}}
    [error] = problems(modules.serverfix.preflight, _with_backup_dir(wanted), pillar, ["redis"])
    assert error.startswith("serverfix:backups:dir: ") and f"{blocker} exists and is not" in error
    fresh = str(tmp_path / "new" / "serverfix")
    config = _with_backup_dir(fresh)
    assert modules.serverfix.preflight(config, {"backups": {"dir": fresh}}, ["redis"]) is True
    assert not (tmp_path / "new").exists()  # read-only: made by the first backup


@pytest.mark.destructive_test  # sets the immutable attribute (chattr +i) on a temp dir
def test_preflight_refuses_a_backup_dir_it_cannot_write(modules, tmp_path):
    with immutable_dir(tmp_path / "locked") as locked:
        for wanted in (str(locked), str(locked / "serverfix")):
            config, pillar = _with_backup_dir(wanted), {"backups": {"dir": wanted}}
            [error] = problems(modules.serverfix.preflight, config, pillar, ["redis"])
            assert error.startswith(f"serverfix:backups:dir: {wanted} cannot be "), error


def test_preflight_refuses_a_backup_dir_in_the_app_directory(modules):
    pillar = {"backups": {"dir": "/var/www/intranet/backend/.backups"}}
    for function, args in (
        (modules.serverfix.validate_pillar, (pillar,)),
        (modules.serverfix.preflight, (DEFAULTS, pillar)),
    ):
        [error] = problems(function, *args)
        assert error.startswith("serverfix:backups:dir: /var/www/intranet/backend/.backups is")
        assert "inside /var/www/intranet/backend, the directory of serverfix:dotenv:file" in error
