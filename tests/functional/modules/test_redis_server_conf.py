"""
redis_server's reading of redis.conf as Redis reads it: bytes that are not UTF-8 and separators
other than "\\n" stay byte for byte, ``include`` is followed where it stands (globs, relative to
the working directory, nested), the last directive wins.
"""

import pytest
from salt.exceptions import CommandExecutionError


def test_bytes_that_are_not_utf8_are_kept_byte_for_byte(modules, tmp_path):
    path = tmp_path / "redis.conf"
    original = (
        b"# caf\xe9 (Latin-1)\n"
        b"# form\x0cfeed and NEL \xc2\x85 and LS \xe2\x80\xa8 inside comments\n"
        b"port 6379\x0c\n"
        b"appendonly no\n"
        b"# \xff\xfe trailing\r\n"
        b"maxmemory-policy allkeys-lru"
    )
    path.write_bytes(original)
    changes = modules.redis_server.config_set(
        str(path), {"appendonly": "yes", "maxmemory-policy": "noeviction", "supervised": "auto"}
    )
    assert set(changes) == {"appendonly", "maxmemory-policy", "supervised"}
    data = path.read_bytes()
    assert data.startswith(
        original.split(b"appendonly no\n", maxsplit=1)[0]
    )  # untouched up to the edit
    assert b"appendonly yes\n# \xff\xfe trailing\r\n" in data
    assert b"maxmemory-policy noeviction\n" in data and data.endswith(b"supervised auto\n")
    assert modules.redis_server.config_get(str(path))["port"] == "6379"
    assert modules.redis_server.config_set(str(path), {"port": "6379", "appendonly": "yes"}) == {}


@pytest.mark.parametrize(
    "separator", [b"\x0c", b"\x0b", b"\xc2\x85", b"\xe2\x80\xa8", b"\r", b"\x1c"]
)
def test_only_newline_ends_a_line(modules, tmp_path, separator):
    """Redis splits at "\n" only: a comment holding another separator stays one comment."""
    path = tmp_path / "redis.conf"
    original = b"port 6379\n# was:" + separator + b"appendonly yes\n"
    path.write_bytes(original)
    assert "appendonly" not in modules.redis_server.config_get(str(path))
    changes = modules.redis_server.config_set(str(path), {"appendonly": "yes"})
    assert changes == {"appendonly": {"old": None, "new": "yes"}}
    assert path.read_bytes().startswith(original)


def test_include_followed_in_order_with_globs_and_nesting(modules, tmp_path):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "20-b.conf").write_text("maxmemory 2mb\nport 7002\n", encoding="utf-8")
    (conf_d / "10-a.conf").write_text(
        f"maxmemory 1mb\ninclude {tmp_path / 'nested.conf'}\n", encoding="utf-8"
    )
    (tmp_path / "nested.conf").write_text("requirepass nested-pw\n", encoding="utf-8")
    path = tmp_path / "redis.conf"
    path.write_text(
        f"port 6379\ndir {tmp_path}\ninclude conf.d/*.conf\ninclude none/*.conf\nbind 127.0.0.1\n",
        encoding="utf-8",
    )
    got = modules.redis_server.config_get(str(path))
    assert got["maxmemory"] == "2mb" and got["port"] == "7002" and got["bind"] == "127.0.0.1"
    assert got["requirepass"] == "<secret>"
    assert modules.redis_server.config_get(str(path), mask=False)["requirepass"] == "nested-pw"
    assert modules.redis_server.config_get(str(path), includes=False)["port"] == "6379"
    with pytest.raises(CommandExecutionError, match="conf.d/20-b.conf .*sets port 7002"):
        modules.redis_server.config_plan(str(path), {"port": "6379"})


def test_missing_include_is_a_clear_error(modules, tmp_path):
    path = tmp_path / "redis.conf"
    path.write_text("include /nonexistent/redis-local.conf\n", encoding="utf-8")
    with pytest.raises(
        CommandExecutionError, match="^/nonexistent/redis-local.conf: no such file$"
    ):
        modules.redis_server.config_get(str(path))


def test_include_loop_is_an_error_not_a_hang(modules, tmp_path):
    path = tmp_path / "redis.conf"
    path.write_text(f"include {path}\n", encoding="utf-8")
    with pytest.raises(CommandExecutionError, match="include nested more than"):
        modules.redis_server.config_get(str(path))


def test_config_set_backs_up_below_the_backup_dir(modules, tmp_path):
    path = tmp_path / "etc" / "redis.conf"
    path.parent.mkdir()
    path.write_bytes(b"port 6379\nappendonly no\n")
    path.chmod(0o640)
    backup_dir = tmp_path / "backups"
    changes = modules.redis_server.config_set(
        str(path), {"appendonly": "yes"}, backup_dir=str(backup_dir)
    )
    assert changes == {"appendonly": {"old": "no", "new": "yes"}}
    [backup] = (backup_dir / str(path.parent).lstrip("/")).glob("redis.conf.serverfix-*.bak")
    assert backup.read_bytes() == b"port 6379\nappendonly no\n"
    assert backup.stat().st_mode & 0o777 == 0o600
    assert not list(path.parent.glob("*.bak"))
    # '' keeps the old place, next to the file
    modules.redis_server.config_set(str(path), {"appendonly": "no"}, backup_dir="")
    assert len(list(path.parent.glob("redis.conf.serverfix-*.bak"))) == 1
