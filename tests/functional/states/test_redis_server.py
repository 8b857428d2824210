"""
redis_server.configured against real redis-server processes (our own, on free ports, with their own
config and data dirs; stopped by PID): switching to AOF keeps every key (redis/redis#12484), also
when the same run changes the port and the password; an empty password never removes a
requirepass by itself; an included file that overrides a managed directive is refused by name.
"""

import pytest

from tests.support.host import free_port
from tests.support.redis import RedisServer

KEYS = 200


@pytest.fixture
def loaded_redis(tmp_path):
    """A Redis with ``appendonly no`` holding KEYS keys in its dump.rdb (saved on shutdown)."""
    server = RedisServer(tmp_path, save="3600 1")
    server.start()
    try:
        for index in range(KEYS):
            server.call("SET", f"job:{index}", f"payload-{index}")
        server.call("SAVE")
        yield server
    finally:
        server.stop()


def _keys(server):
    return int(server.call("DBSIZE"))


def test_switch_to_aof_keeps_every_key(states, loaded_redis):
    conf = str(loaded_redis.conf)
    preview = states.redis_server.configured(
        name=conf, bind=["127.0.0.1"], port=loaded_redis.port, test=True
    )
    assert preview.result is None
    assert f"AOF switched on at run time first, {KEYS} keys kept" in preview.comment
    assert "aof" in preview.changes and preview.changes["appendonly"]["new"] == "yes"
    assert loaded_redis.call("CONFIG", "GET", "appendonly") == ["appendonly", "no"]
    ret = states.redis_server.configured(name=conf, bind=["127.0.0.1"], port=loaded_redis.port)
    assert ret.result is True, ret.comment
    assert f"{KEYS} keys kept" in ret.comment
    assert set(ret.changes) == set(preview.changes)
    loaded_redis.restart()  # what redis_server.running does after the edit
    assert loaded_redis.call("CONFIG", "GET", "appendonly") == ["appendonly", "yes"]
    assert _keys(loaded_redis) == KEYS
    assert loaded_redis.call("GET", "job:199") == "payload-199"
    again = states.redis_server.configured(name=conf, bind=["127.0.0.1"], port=loaded_redis.port)
    assert (again.result, again.changes) == (True, {})


def test_switch_to_aof_keeps_keys_when_port_and_password_change(states, loaded_redis):
    new_port = free_port()
    conf = str(loaded_redis.conf)
    ret = states.redis_server.configured(
        name=conf, bind=["127.0.0.1"], port=new_port, password="n3w-pw"
    )
    assert ret.result is True, ret.comment
    assert {"port", "requirepass", "appendonly", "aof"} <= set(ret.changes)
    assert "n3w-pw" not in str(ret.changes) + ret.comment
    loaded_redis.restart(port=new_port, password="n3w-pw")
    assert _keys(loaded_redis) == KEYS


def test_stale_server_with_aof_already_in_the_file_is_switched_too(states, loaded_redis):
    """An interrupted run wrote `appendonly yes` but Redis still runs with `no`: a restart
    would drop its data, so the state switches the running server over although the file
    needs no change."""
    text = loaded_redis.conf.read_text(encoding="utf-8")
    loaded_redis.conf.write_text(text.replace("appendonly no", "appendonly yes"), encoding="utf-8")
    ret = states.redis_server.configured(
        name=str(loaded_redis.conf), bind=["127.0.0.1"], port=loaded_redis.port
    )
    assert ret.result is True and "aof" in ret.changes, ret.comment
    loaded_redis.restart()
    assert _keys(loaded_redis) == KEYS


def test_stopped_redis_with_rdb_data_is_refused(states, loaded_redis):
    loaded_redis.stop()  # saves dump.rdb
    before = loaded_redis.conf.read_bytes()
    ret = states.redis_server.configured(
        name=str(loaded_redis.conf), bind=["127.0.0.1"], port=loaded_redis.port
    )
    assert (ret.result, ret.changes) == (False, {})
    assert "dump.rdb holds its data" in ret.comment and "Start Redis" in ret.comment
    assert loaded_redis.conf.read_bytes() == before


def test_empty_password_never_removes_requirepass(states, modules, tmp_path):
    conf = tmp_path / "redis.conf"
    conf.write_text("port 6379\nrequirepass hand-set-pw\nappendonly yes\n", encoding="utf-8")
    before = conf.read_bytes()
    for test in (True, False):
        ret = states.redis_server.configured(
            name=str(conf), bind=["127.0.0.1"], password="", appendonly=False, test=test
        )
        assert (ret.result, ret.changes) == (False, {})
        assert "requirepass" in ret.comment and "allow_remove" in ret.comment
        assert "hand-set-pw" not in ret.comment
    assert conf.read_bytes() == before
    with pytest.raises(Exception, match="password is empty") as exc:
        modules.redis_server.preflight(str(conf), password="")
    assert exc.value.info["arguments"] == ["password"]
    assert modules.redis_server.preflight(str(conf), password="other") is True
    assert modules.redis_server.preflight(str(conf), password="", allow_remove=True) is True
    ret = states.redis_server.configured(
        name=str(conf), bind=["127.0.0.1"], appendonly=False, remove_password=True, test=True
    )
    assert ret.changes["requirepass"] == {"old": "<secret>", "new": None}


def test_empty_password_refused_when_requirepass_comes_from_an_include(states, tmp_path):
    auth = tmp_path / "auth.conf"
    auth.write_text("requirepass from-include\n", encoding="utf-8")
    conf = tmp_path / "redis.conf"
    conf.write_text(f"port 6379\nappendonly no\ninclude {auth}\n", encoding="utf-8")
    ret = states.redis_server.configured(name=str(conf), bind=["127.0.0.1"], appendonly=False)
    assert (ret.result, ret.changes) == (False, {})
    assert str(auth) in ret.comment and "from-include" not in ret.comment


def test_empty_requirepass_is_shown_empty(states, tmp_path):
    conf = tmp_path / "redis.conf"
    conf.write_text('port 6379\nrequirepass ""\n', encoding="utf-8")
    ret = states.redis_server.configured(
        name=str(conf), bind=["127.0.0.1"], password="pw-1", appendonly=False, test=True
    )
    assert ret.result is None
    assert ret.changes["requirepass"] == {"old": "", "new": "<secret>"}


@pytest.mark.parametrize("directive", ["bind 0.0.0.0", "requirepass other-pw", "port 7000"])
def test_included_file_overriding_a_managed_directive_is_refused(states, tmp_path, directive):
    sub = tmp_path / "conf.d"
    sub.mkdir()
    (sub / "10-local.conf").write_text(f"{directive}\n", encoding="utf-8")
    conf = tmp_path / "redis.conf"
    # relative glob, from the working directory Redis has after the `dir` line
    conf.write_text(
        f"dir {tmp_path}\nbind 127.0.0.1\nport 6379\nappendonly no\n"
        "requirepass pw-1\ninclude conf.d/*.conf\n",
        encoding="utf-8",
    )
    before = conf.read_bytes()
    for test in (True, False):
        ret = states.redis_server.configured(
            name=str(conf), bind=["127.0.0.1"], password="pw-1", appendonly=False, test=test
        )
        assert (ret.result, ret.changes) == (False, {}), ret.comment
        assert str(sub / "10-local.conf") in ret.comment
        assert "other-pw" not in ret.comment
    assert conf.read_bytes() == before


def test_include_before_the_managed_lines_is_fine(states, tmp_path):
    """Debian's layout: an include at the top is overridden by the file's own lines."""
    local = tmp_path / "local.conf"
    local.write_text("bind 0.0.0.0\nmaxmemory 100mb\n", encoding="utf-8")
    conf = tmp_path / "redis.conf"
    conf.write_text(f"include {local}\nbind 127.0.0.1\nappendonly no\n", encoding="utf-8")
    ret = states.redis_server.configured(name=str(conf), bind=["127.0.0.1"], appendonly=False)
    assert ret.result is True, ret.comment
    assert "bind" not in ret.changes
    assert local.read_text(encoding="utf-8") == "bind 0.0.0.0\nmaxmemory 100mb\n"


def test_the_comment_names_where_the_backup_went(states, loaded_redis, tmp_path):
    conf = str(loaded_redis.conf)
    backup_dir = tmp_path / "backups"
    where = f"{backup_dir}{loaded_redis.conf.parent.resolve()}/"
    kwargs = {"name": conf, "bind": ["127.0.0.1"], "port": loaded_redis.port}
    preview = states.redis_server.configured(test=True, backup_dir=str(backup_dir), **kwargs)
    assert preview.result is None and f"(after a backup in {where})" in preview.comment
    assert not backup_dir.exists()  # the preview made nothing, not even the directory
    ret = states.redis_server.configured(backup_dir=str(backup_dir), **kwargs)
    assert ret.result is True and f"(backup in {where})" in ret.comment, ret.comment
    assert len(list(backup_dir.glob("**/*.serverfix-*.bak"))) == 1
    assert not list(loaded_redis.conf.parent.glob("*.serverfix-*.bak"))


def _host_maxmemory():
    """What ``maxmemory: auto`` is on this host (the rule's own test has the numbers)."""
    from tests.support.loader import import_salt_module  # pylint: disable=import-outside-toplevel
    from tests.support.paths import UTILS_DIR  # pylint: disable=import-outside-toplevel

    rule = import_salt_module(UTILS_DIR / "serverfix_redismem.py", "serverfix_state_redismem")
    return rule.resolve_maxmemory("auto", service="redis-server")["value"]


@pytest.mark.parametrize(
    ("maxmemory", "written"), [("auto", None), (0, "0"), ("256mb", "256mb"), ("", "")]
)
def test_maxmemory_auto_is_previewed_applied_and_idempotent(states, tmp_path, maxmemory, written):
    conf = tmp_path / "redis.conf"
    conf.write_text("port 6379\nmaxmemory-policy noeviction\n", encoding="utf-8")
    wanted = _host_maxmemory() if written is None else written
    kwargs = {"name": str(conf), "bind": ["127.0.0.1"], "appendonly": False}
    preview = states.redis_server.configured(maxmemory=maxmemory, test=True, **kwargs)
    if wanted == "":  # '' leaves maxmemory alone
        assert "maxmemory" not in preview.changes
        return
    assert preview.result is None
    assert preview.changes["maxmemory"] == {"old": None, "new": wanted}  # the chosen value
    assert "maxmemory " not in conf.read_text(encoding="utf-8")  # test mode wrote nothing
    real = states.redis_server.configured(maxmemory=maxmemory, **kwargs)
    assert real.result is True and real.changes == preview.changes
    assert f"\nmaxmemory {wanted}\n" in conf.read_text(encoding="utf-8")
    again = states.redis_server.configured(maxmemory=maxmemory, **kwargs)
    assert again.result is True and again.changes == {}, again.comment
