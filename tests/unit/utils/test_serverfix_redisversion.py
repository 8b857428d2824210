"""The Redis version reading of the preflight (BullMQ needs Redis >= 6.2): Debian/Ubuntu package
versions with epochs and revisions, ``redis-server --version``, ``apt-cache policy`` output."""

import pytest

from tests.support.loader import import_salt_module
from tests.support.paths import UTILS_DIR

VERSION = import_salt_module(UTILS_DIR / "serverfix_redisversion.py", "serverfix_redisversion_t")


@pytest.mark.parametrize(
    "raw, upstream, parsed",
    [
        ("5:7.0.15-1~deb12u1", "7.0.15", ((7, 0, 15), False)),
        ("5:7.0.15-1~deb12u10", "7.0.15", ((7, 0, 15), False)),
        ("6:6.0.16-1ubuntu1", "6.0.16", ((6, 0, 16), False)),
        ("5:6.0.16-1+deb11u2", "6.0.16", ((6, 0, 16), False)),
        ("5:6.2.0+dfsg-1", "6.2.0+dfsg", ((6, 2, 0), False)),
        ("7.2.0~rc1-1", "7.2.0~rc1", ((7, 2, 0), True)),
        ("7:7.4.1-1rl1~bookworm1", "7.4.1", ((7, 4, 1), False)),  # packages.redis.io
        ("7.0.15", "7.0.15", ((7, 0, 15), False)),  # redis-server --version
        ("6.2", "6.2", ((6, 2), False)),
    ],
)
def test_debian_versions_are_read(raw, upstream, parsed):
    assert VERSION.upstream(raw) == upstream
    assert VERSION.parse(raw) == parsed


@pytest.mark.parametrize("raw", ["", None, "(none)", "abc", "5:"])
def test_no_version(raw):
    assert VERSION.parse(raw) is None


@pytest.mark.parametrize(
    "raw, minimum, ok",
    [
        ("5:7.0.15-1~deb12u1", "6.2", True),
        ("6:6.0.16-1ubuntu1", "6.2", False),  # Ubuntu 22.04: too old for BullMQ
        ("6.2.0", "6.2", True),
        ("6.2", "6.2.0", True),
        ("6.1.99", "6.2", False),
        ("10.0.1", "6.2", True),  # numeric, not text order
        ("6.2.0~rc1-1", "6.2", False),  # a release candidate of the minimum is older
        ("6.2.1~rc1-1", "6.2", True),
        ("5:6.2.0+dfsg-1", "6.2", True),
    ],
)
def test_at_least(raw, minimum, ok):
    assert VERSION.at_least(raw, minimum) is ok


def test_policy_and_server_output():
    stdout = (
        "redis-server:\n  Installed: (none)\n  Candidate: 6:6.0.16-1ubuntu1\n  Version table:\n"
        "     6:6.0.16-1ubuntu1 500\n"
    )
    assert VERSION.policy(stdout) == {"installed": None, "candidate": "6:6.0.16-1ubuntu1"}
    assert VERSION.policy("") == {"installed": None, "candidate": None}
    line = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c"
    assert VERSION.server(line) == "7.0.15"
    assert VERSION.server("redis-server: command not found") is None


def test_problem_message_names_version_minimum_and_the_way_out():
    versions = [{"version": "6.0.16", "raw": "6:6.0.16-1ubuntu1", "source": "apt-cache policy x"}]
    [msg] = VERSION.problems(versions, "6.2", "serverfix:redis:min_version")
    assert msg.startswith("serverfix:redis:min_version: Redis 6.0.16 ")
    assert "6:6.0.16-1ubuntu1" in msg and "older than 6.2" in msg and "BullMQ" in msg
    assert "packages.redis.io" in msg and "backport" in msg and "nothing was changed" in msg
    ok = [{"version": "7.0.15", "raw": "7.0.15", "source": "redis-server --version"}]
    assert VERSION.problems(ok, "6.2", "k") == []
