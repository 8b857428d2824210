"""
The pillar contract (``_utils/serverfix_schema.py``) on its own, with the helpers it is given by
the loader: numbers, Redis bind addresses, a Redis open to other hosts, processes both removed
and kept, .env keys npm dotenv ignores; and ``config=`` of diagnose/verify validated the same way.
"""

import json

import pytest
from salt.exceptions import SaltInvocationError

from tests.support.loader import DEFAULTS, import_salt_module, merge_settings
from tests.support.paths import UTILS_DIR

NAMES = (
    "serverfix_defaults",
    "serverfix_size",
    "serverfix_pillar",
    "serverfix_schema",
    "serverfix_settings",
    "serverfix_npm",
)
MODULES = {
    name: import_salt_module(UTILS_DIR / f"{name}.py", f"{name}_test_schema_unit") for name in NAMES
}
UTILS = {
    f"{name}.{attr}": func
    for name, module in MODULES.items()
    for attr, func in vars(module).items()
    if callable(func) and not attr.startswith("_")
}
NPM = MODULES["serverfix_npm"]


def errors(pillar):
    return UTILS["serverfix_schema.validate"](pillar, UTILS)


def test_defaults_are_valid():
    assert errors(DEFAULTS) == [] and errors({}) == []


# item 6: ASCII decimal integers only, never a traceback, bools are not ints
@pytest.mark.parametrize(
    "value", ["010", "00", "³", "٣", "１０", " 10", "10 ", "+10", "-1", True, 1.5]
)
def test_numbers_that_are_not_plain_decimals_are_refused(value):
    [message] = errors({"swap": {"swappiness": value}})
    assert message.startswith("serverfix:swap:swappiness: ") and "expected an integer" in message


@pytest.mark.parametrize("value", ["٣G", "³M", "２G"])
def test_sizes_with_non_ascii_digits_are_refused(value):
    [message] = errors({"swap": {"size": value}})
    assert "serverfix:swap:size" in message


def test_redis_maxmemory_with_non_ascii_digits_is_refused():
    assert errors({"redis": {"maxmemory": "٣mb"}})


@pytest.mark.parametrize("value, expected", [("10", 10), ("0", 0), (10, 10)])
def test_decimal_strings_are_passed_on_as_ints(value, expected):
    assert errors({"swap": {"swappiness": value}}) == []
    merged = merge_settings({"swap": {"swappiness": value}, "redis": {"port": str(6380)}})
    assert merged["swap"]["swappiness"] == expected and isinstance(
        merged["swap"]["swappiness"], int
    )
    assert merged["redis"]["port"] == 6380


# item 9: each bind address checked with ipaddress
@pytest.mark.parametrize(
    "bind", [["127.0.0.1", "999.1.1.1"], ["127.0.0.1", "::g"], ["localhost"], ["127.0.0.1/8"], [""]]
)
def test_bad_bind_addresses_are_refused(bind):
    [message] = errors({"redis": {"bind": bind}})
    assert message.startswith("serverfix:redis:bind: ") and "IP address" in message


@pytest.mark.parametrize("bind", [["127.0.0.1", "-::1"], ["127.0.0.2"], ["!127.0.0.1"], ["::1"]])
def test_loopback_binds_pass(bind):
    assert errors({"redis": {"bind": bind}}) == []


# item 15: beyond loopback only with allow_remote and a password
@pytest.mark.parametrize(
    "bind", [["0.0.0.0"], ["*"], ["127.0.0.1", "-::*"], ["10.0.0.5"], ["::"], ["::ffff:10.0.0.1"]]
)
def test_remote_bind_needs_allow_remote_and_a_password(bind):
    [message] = errors({"redis": {"bind": bind}})
    assert "serverfix:redis:bind" in message and "serverfix:redis:allow_remote" in message
    [message] = errors({"redis": {"bind": bind, "allow_remote": True}})
    assert "serverfix:redis:password" in message
    assert errors({"redis": {"bind": bind, "allow_remote": True, "password": "s3cret-pw"}}) == []


def test_remote_bind_is_not_checked_when_redis_is_not_managed():
    assert errors({"redis": {"enabled": False, "bind": ["0.0.0.0"]}}) == []


def test_allow_remote_is_a_bool():
    assert errors({"redis": {"allow_remote": "yes"}})


# item 4: nothing the formula keeps may be removed
@pytest.mark.parametrize(
    "pillar, name",
    [
        ({"remove_processes": ["prisma-studio", "intranet-backend"]}, "intranet-backend"),
        ({"remove_processes": ["api"], "backend": {"name": "api"}}, "api"),
        ({"remove_processes": ["api "], "backend": {"name": "api"}}, "api "),
    ],
)
def test_a_kept_process_cannot_be_removed(pillar, name):
    [message] = errors(pillar)
    assert "serverfix:remove_processes" in message and "serverfix:backend:name" in message
    assert repr(name) in message


# item 12: npm dotenv sets the object's prototype for __proto__, it is never a key
@pytest.mark.parametrize(
    "pillar",
    [{"dotenv": {"extra": {"__proto__": "x"}}}, {"dotenv": {"secret_keys": ["__proto__"]}}],
)
def test_proto_is_not_an_env_key(pillar):
    [message] = errors(pillar)
    assert "__proto__" in message


def test_constructor_is_an_env_key():  # npm dotenv keeps it (checked with dotenv 18)
    assert errors({"dotenv": {"extra": {"constructor": "x", "prototype": "y"}}}) == []


# item 7: config= is validated like the pillar
def load(config):
    return UTILS["serverfix_settings.load"](config, {}, UTILS)


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"sorce": "config"}, "config:sorce: unknown key"),
        ({"redis": {"prot": 6380}}, "config:redis:prot: unknown key (did you mean 'port'?)"),
        ({"redis": {"port": "abc"}}, "config:redis:port: 'abc' is not valid"),
        ({"redis": "x"}, "config:redis: 'x' is not valid; expected a mapping"),
        ({"swap": {"swappiness": "010"}}, "config:swap:swappiness: '010' is not valid"),
        ({"swap": {"size": ["2G"]}}, "config:swap:size: ['2G'] is not valid"),
        ({"redis": {"password": "a b"}}, "config:redis:password: <secret> is not valid"),
    ],
)
def test_config_is_validated_like_the_pillar(config, expected):
    for given in (config, json.dumps(config)):
        with pytest.raises(SaltInvocationError) as info:
            load(given)
        assert any(expected in e for e in info.value.info["errors"]), info.value.info
        assert expected in str(info.value)


def test_config_that_is_not_yaml_is_a_clear_error():
    with pytest.raises(SaltInvocationError, match="config: not JSON or YAML"):
        load("{redis: [")


def test_full_merged_config_is_valid():
    settings, problems, source = load(merge_settings({"queue": {"concurrency": 7}}))
    assert problems == [] and source == "config" and settings["queue"]["concurrency"] == 7


# item 11: the npm dotenv version
def write_package(directory, version):
    package = directory / "node_modules" / "dotenv" / "package.json"
    package.parent.mkdir(parents=True)
    package.write_text(json.dumps({"name": "dotenv", "version": version}), encoding="utf-8")
    return package


@pytest.mark.parametrize("version", ["10.0.0", "14.3.2", "8.2.0"])
def test_old_dotenv_is_refused(tmp_path, version):
    app = tmp_path / "app"
    app.mkdir()
    package = write_package(tmp_path, version)  # above the app directory, as Node finds it
    found = NPM.dotenv_version(str(app / ".env"))
    assert found["source"] == str(package) and found["major"] == int(version.split(".")[0])
    message = NPM.version_problem(found, "serverfix:dotenv:npm_version")
    assert version in message and "export" in message and "npm install dotenv@16" in message


@pytest.mark.parametrize("version", ["15.0.0", "16.6.1", "17.4.2", "18.0.10"])
def test_current_dotenv_passes(tmp_path, version):
    write_package(tmp_path, version)
    found = NPM.dotenv_version(str(tmp_path / ".env"))
    assert found["version"] == version and NPM.version_problem(found, "k") == ""


def test_pinned_version_wins_and_none_found_means_current(tmp_path):
    write_package(tmp_path, "16.4.5")
    found = NPM.dotenv_version(str(tmp_path / ".env"), "14.0.0")
    assert found["source"] == "pillar" and NPM.version_problem(found, "k")
    nothing = NPM.dotenv_version("/nonexistent-serverfix/app/.env")
    assert nothing["version"] is None and NPM.version_problem(nothing, "k") == ""


def test_unreadable_package_json_is_named(tmp_path):
    package = write_package(tmp_path, "16.0.0")
    package.write_text("{not json", encoding="utf-8")
    message = NPM.version_problem(NPM.dotenv_version(str(tmp_path / ".env")), "k")
    assert str(package) in message and "set k" in message


@pytest.mark.parametrize("value", ["16", "16.4", "16.4.5", ""])
def test_npm_version_key(value):
    assert errors({"dotenv": {"npm_version": value}}) == []
    assert errors({"dotenv": {"npm_version": "v16 latest"}})


# item 12: the backup directory (serverfix:backups:dir)
ENV = "/var/www/intranet/backend/.env"


@pytest.mark.parametrize("value", ["backups", "./b", "~/b", "/b\nc", 5, True, None, []])
def test_backup_dir_must_be_absolute_or_empty(value):
    [message] = errors({"backups": {"dir": value}})
    assert message.startswith("serverfix:backups:dir: ") and "an absolute path" in message
    assert "or '' for next to each file" in message


@pytest.mark.parametrize(
    "value",
    [
        "/var/www/intranet/backend",
        "/var/www/intranet/backend/",
        "/var/www/intranet/backend/backups",
        "/var/www/intranet/backend/.serverfix/bak",
        "/var/www/intranet/x/../backend/b",
    ],
)
def test_backup_dir_inside_the_app_directory_is_refused(value):
    [message] = errors({"backups": {"dir": value}, "dotenv": {"file": ENV}})
    assert message.startswith("serverfix:backups:dir: ")
    assert "inside /var/www/intranet/backend, the directory of serverfix:dotenv:file" in message
    assert "use a directory outside it (default /var/backups/serverfix)" in message


def test_backup_dir_root_puts_every_backup_next_to_its_file():
    [message] = errors({"backups": {"dir": "/"}})
    assert message.startswith("serverfix:backups:dir: '/'") and "use a directory outside" in message


@pytest.mark.parametrize(
    "value", ["", "/var/backups/serverfix", "/var/www/intranet/backend2", "/var/www/intranet"]
)
def test_backup_dir_outside_the_app_directory_passes(value):
    assert errors({"backups": {"dir": value}, "dotenv": {"file": ENV}}) == []


def test_backup_dir_inside_the_app_directory_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "app")
    pillar = {
        "backups": {"dir": f"{tmp_path}/link/bak"},
        "dotenv": {"file": f"{tmp_path}/app/.env"},
    }
    [message] = errors(pillar)
    assert message.startswith("serverfix:backups:dir: ") and "inside" in message


def test_backup_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x", encoding="utf-8")
    [message] = errors({"backups": {"dir": str(tmp_path / "file")}})
    assert message == (
        f"serverfix:backups:dir: {tmp_path / 'file'} exists and is not a directory; remove it "
        "or choose another directory (default /var/backups/serverfix)"
    )


@pytest.mark.parametrize("value", ["auto", "", 0, "0", "256mb", "1gb"])
def test_redis_maxmemory_auto_empty_zero_and_sizes_are_valid(value):
    assert not errors({"redis": {"maxmemory": value}})


@pytest.mark.parametrize("value", [1, 0, 2, "1", "", None])
def test_swap_overcommit_memory_valid(value):
    assert not errors({"swap": {"overcommit_memory": value}})


@pytest.mark.parametrize("value", [3, -1, "yes", True, "01"])
def test_swap_overcommit_memory_invalid_names_the_key(value):
    found = errors({"swap": {"overcommit_memory": value}})
    assert found and "serverfix:swap:overcommit_memory" in str(found)


def test_memory_safety_defaults():
    assert DEFAULTS["redis"]["maxmemory"] == "auto" and DEFAULTS["swap"]["overcommit_memory"] == 1
