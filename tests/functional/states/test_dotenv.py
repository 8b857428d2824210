"""
dotenv states and module through the real Salt loader, on real files, checked with real npm dotenv.

Phase 2 on a realistic backend .env, test mode (byte-identical, exact prediction), idempotence,
mode/owner (a real non-root user), symlinks, backups (0600, pruned), every bad input (clear message,
file byte-identical) and secrets (never in returns or logs).
"""

import logging
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.host import IS_ROOT, sha256
from tests.support.paths import backup_mirror

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="owner, chattr and uid switches need root")

JWT = "jwt-Sup3r$ecret#with'quote and \\backslash"
REDIS_PW = "r3dis-pw-8f2k1q"
BACKEND_ENV = (
    "# Intranet backend — production settings\n"
    "NODE_ENV=production\n"
    "PORT=3000\n"
    "\n"
    "# database (password URL-encoded; '#' inside quotes is not a comment)\n"
    'DATABASE_URL="postgresql://intranet:p%40ss#w0rd!@127.0.0.1:5432/intranet?schema=public&sslmode=disable"\n'
    "JWT_SECRET='k9$Lx#2v\"Qp=='\n"
    "JWT_REFRESH_SECRET=abc123==  # rotated 2024-01\n"
    'export SMTP_PASSWORD="p@ss w0rd"\n'
    "REDIS_HOST=localhost\n"
    "CORS_ORIGIN=https://intranet.example.local\n"
    'PRIVATE_KEY="-----BEGIN KEY-----\nMIIB\\nabc\n-----END KEY-----"\n'
    "QUEUE_ENABLED=false # fallback: synchronous\n"
)
RUNBOOK = {
    "REDIS_HOST": "127.0.0.1",
    "REDIS_PORT": 6379,
    "REDIS_PASSWORD": "",
    "REDIS_DB": 0,
    "QUEUE_ENABLED": "true",
    "QUEUE_CONCURRENCY": 5,
}


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "backend" / ".env"
    path.parent.mkdir()
    path.write_text(BACKEND_ENV, encoding="utf-8")
    path.chmod(0o640)
    return path


@pytest.fixture(scope="module")
def app_user():
    """A real non-root user (and group) owning the .env, as on the server; removed afterwards."""
    name = f"sfxenv{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
    )
    try:
        import pwd  # pylint: disable=import-outside-toplevel

        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def shared_dir():
    """A directory a non-root user can reach (pytest's tmp dirs are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="sfx-dotenv-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-R", "-i", str(path)], check=False, capture_output=True)
        shutil.rmtree(path)
        shutil.rmtree(backup_mirror(path), ignore_errors=True)  # backups made by default


def without_backup(changes):
    return {k: v for k, v in changes.items() if k != "backup"}


def test_phase2_on_a_realistic_backend_env(states, env_file, npm_dotenv):
    before_npm = npm_dotenv.parse(env_file.read_bytes())
    checksum = sha256(env_file)

    preview = states.dotenv.present(name=str(env_file), values=RUNBOOK, test=True)
    assert preview.result is None
    assert sha256(env_file) == checksum  # test=True: byte-identical
    assert preview.changes["added"] == [
        "REDIS_PORT",
        "REDIS_PASSWORD",
        "REDIS_DB",
        "QUEUE_CONCURRENCY",
    ]
    assert preview.changes["changed"] == ["REDIS_HOST", "QUEUE_ENABLED"]
    assert "would add" in preview.comment and "after a backup" in preview.comment

    ret = states.dotenv.present(name=str(env_file), values=RUNBOOK)
    assert ret.result is True
    assert without_backup(ret.changes) == preview.changes  # the preview was exact
    assert Path(ret.changes["backup"]).read_text(encoding="utf-8") == BACKEND_ENV

    after_npm = npm_dotenv.parse(env_file.read_bytes())
    assert after_npm == dict(before_npm, **{k: str(v) for k, v in RUNBOOK.items()})
    text = env_file.read_text(encoding="utf-8")
    assert (
        "REDIS_HOST=127.0.0.1\n" in text and "QUEUE_ENABLED=true # fallback: synchronous\n" in text
    )
    # every untouched line is byte-for-byte the same, in the same order
    untouched = [
        line
        for line in BACKEND_ENV.splitlines()
        if not line.startswith(("REDIS_HOST", "QUEUE_ENABLED"))
    ]
    assert [line for line in text.splitlines() if line in untouched] == untouched

    again = states.dotenv.present(name=str(env_file), values=RUNBOOK)
    assert again.result is True and again.changes == {}
    assert "already has" in again.comment
    again_preview = states.dotenv.present(name=str(env_file), values=RUNBOOK, test=True)
    assert again_preview.result is True and again_preview.changes == {}


@pytest.mark.destructive_test  # adds (and removes) a system user
def test_mode_owner_backups_and_pruning(states, env_file, app_user, tmp_path):
    os.chown(env_file, app_user.pw_uid, app_user.pw_gid)
    backup_dir = tmp_path / "backups"
    mirror = Path(str(backup_dir) + str(env_file.parent))
    for round_ in range(4):
        ret = states.dotenv.present(
            name=str(env_file),
            values={"QUEUE_CONCURRENCY": round_ + 1},
            backup_keep=2,
            backup_dir=str(backup_dir),
        )
        assert ret.result is True and ret.changes["backup"]
        st = env_file.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            app_user.pw_uid,
            app_user.pw_gid,
            0o640,
        )
    assert not list(env_file.parent.glob("*.bak"))  # none in the app directory
    backups = sorted(mirror.glob(".env.serverfix-*.bak"), key=lambda p: p.stat().st_mtime)
    assert len(backups) == 2  # the two oldest were pruned
    assert backups[-1] == Path(ret.changes["backup"])
    for backup in backups:
        st = backup.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            app_user.pw_uid,
            app_user.pw_gid,
            0o600,
        )
    assert "QUEUE_CONCURRENCY=3" in backups[-1].read_text(encoding="utf-8")


def test_symlinked_env_edits_the_target(states, tmp_path, env_file):
    link = tmp_path / "app" / ".env"
    link.parent.mkdir()
    link.symlink_to(env_file)
    ret = states.dotenv.present(
        name=str(link), values={"REDIS_HOST": "127.0.0.1"}, backup_dir=str(tmp_path / "b")
    )
    assert ret.result is True and ret.changes["changed"] == ["REDIS_HOST"]
    assert link.is_symlink() and os.readlink(link) == str(env_file)
    assert "REDIS_HOST=127.0.0.1" in env_file.read_text(encoding="utf-8")
    # named after the target (the file really changed), mirrored below the backup directory
    assert Path(ret.changes["backup"]).parent == Path(f"{tmp_path}/b{env_file.parent}")


@pytest.mark.destructive_test  # adds (and removes) a system user
def test_create_with_owner_and_mode(states, tmp_path, app_user):
    path = tmp_path / "new.env"
    ret = states.dotenv.present(name=str(path), values=RUNBOOK, test=True, create=True)
    assert ret.result is None and ret.changes["created"] is True and not path.exists()
    ret = states.dotenv.present(
        name=str(path),
        values=RUNBOOK,
        create=True,
        user=app_user.pw_name,
        group=app_user.pw_name,
        mode="0600",
    )
    assert ret.result is True and "backup" not in ret.changes
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
        app_user.pw_uid,
        app_user.pw_gid,
        0o600,
    )
    assert states.dotenv.present(name=str(path), values=RUNBOOK, create=True).changes == {}


def test_absent_removes_every_occurrence(states, tmp_path):
    path = tmp_path / ".env"
    path.write_bytes(b"A=1\r\nOLD=x # legacy\r\nB=2\r\nexport OLD='y'\r\n")
    preview = states.dotenv.absent(name=str(path), keys=["OLD", "MISSING"], test=True)
    assert preview.result is None and preview.changes["removed"] == ["OLD"]
    ret = states.dotenv.absent(name=str(path), keys=["OLD", "MISSING"])
    assert ret.result is True and path.read_bytes() == b"A=1\r\nB=2\r\n"
    assert states.dotenv.absent(name=str(path), keys=["OLD"]).changes == {}
    assert states.dotenv.absent(name=str(tmp_path / "none.env"), keys=["OLD"]).result is True


def test_secrets_never_in_returns_or_logs(states, modules, env_file, caplog):
    values = dict(
        RUNBOOK,
        REDIS_PASSWORD=REDIS_PW,
        JWT_SECRET=JWT,
        APP_SESSION="sess-value-77",
        STRIPE_KEY="sk_9x",
    )
    with caplog.at_level(logging.DEBUG):
        preview = states.dotenv.present(
            name=str(env_file), values=values, secret_keys=["APP_SESSION"], test=True
        )
        ret = states.dotenv.present(name=str(env_file), values=values, secret_keys=["APP_SESSION"])
        plan = modules.dotenv.plan(str(env_file), values=dict(values, REDIS_PASSWORD="other-pw-31"))
    assert ret.result is True and modules.dotenv.get(str(env_file), "REDIS_PASSWORD") == REDIS_PW
    # the test harness itself (saltfactories) logs the call's arguments: everything else counts
    logs = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("saltfactories.")
    )
    shown = repr(preview.raw) + repr(ret.raw) + repr(plan) + logs
    for secret in (REDIS_PW, JWT, "sess-value-77", "sk_9x", "other-pw-31", "k9$Lx#2v"):
        assert secret not in shown
    assert ret.changes["values"]["REDIS_PASSWORD"] == {"old": None, "new": "<secret>"}
    assert ret.changes["values"]["JWT_SECRET"] == {"old": "<secret>", "new": "<secret>"}
    assert ret.changes["values"]["REDIS_HOST"] == {"old": "localhost", "new": "127.0.0.1"}


BAD_INPUTS = [
    ("invalid key", {"values": {"REDIS HOST": "x"}}, "'REDIS HOST' is not a valid .env key"),
    ("non-ASCII key", {"values": {"ÄÖ": "x"}}, "'ÄÖ' is not a valid .env key"),
    (
        "null value",
        {"values": {"A": None}},
        "A: the value must be a string or a number, not NoneType",
    ),
    (
        "boolean value",
        {"values": {"QUEUE_ENABLED": True}},
        "QUEUE_ENABLED: the value must be a string or a number",
    ),
    ("list value", {"values": {"A": [1]}}, "A: the value must be a string or a number, not list"),
    ("values not a mapping", {"values": ["A=1"]}, "values must be a mapping"),
    (
        "unencodable secret",
        {"values": {"JWT_SECRET": "a\rb\\nc"}},
        "JWT_SECRET: cannot write this value",
    ),
    ("bad mode", {"values": {"A": 1}, "mode": "rw-r"}, "mode 'rw-r' is not an octal file mode"),
    (
        "backup_keep 0",
        {"values": {"A": 1}, "backup_keep": 0},
        "backup_keep 0 is not a whole number",
    ),
    (
        "relative backup_dir",
        {"values": {"A": 1}, "backup_dir": "backups"},
        "backup_dir 'backups' is not an absolute path",
    ),
]


@pytest.mark.parametrize(
    "kwargs, message", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_is_refused_file_untouched(states, env_file, testmode, kwargs, message):
    checksum = sha256(env_file)
    ret = states.dotenv.present(name=str(env_file), test=testmode, **kwargs)
    assert (
        ret.result is False
        and message in ret.comment
        and ret.comment.endswith("; nothing was changed")
    )
    assert ret.changes == {}
    assert sha256(env_file) == checksum
    assert "a\rb" not in ret.comment
    assert not list(env_file.parent.glob("*.bak"))


def test_value_that_would_change_a_neighbour_is_refused(states, tmp_path):
    path = tmp_path / ".env"
    path.write_text("U='unterminated\nA=1\n", encoding="utf-8")
    checksum = sha256(path)
    ret = states.dotenv.present(
        name=str(path), values={"B": "a' #b"}
    )  # every form would end U's quote
    assert ret.result is False
    assert ret.comment == (
        "B: cannot write the value here without changing how npm dotenv reads A, U (an "
        "unterminated quote in the file?); fix the quoting there by hand; nothing was changed"
    )
    assert sha256(path) == checksum


def test_missing_file_and_wrong_paths(states, tmp_path, testmode):
    missing = tmp_path / "nope" / ".env"
    ret = states.dotenv.present(name=str(missing), values=RUNBOOK, test=testmode)
    assert (
        ret.result is False
        and "no such file" in ret.comment
        and "create=True to create it" in ret.comment
    )
    assert ret.changes == {} and "Additional info" not in ret.comment
    ret = states.dotenv.present(name=str(missing), values=RUNBOOK, create=True, test=testmode)
    assert ret.result is False and f"directory {missing.parent} does not exist" in ret.comment
    dangling = tmp_path / "dangling.env"
    dangling.symlink_to(tmp_path / "gone")
    ret = states.dotenv.present(name=str(dangling), values=RUNBOOK, test=testmode)
    assert ret.result is False and "symlink points to a missing file" in ret.comment
    ret = states.dotenv.present(name=str(tmp_path), values=RUNBOOK, test=testmode)
    assert ret.result is False and "is not a regular file" in ret.comment
    ret = states.dotenv.present(
        name=str(tmp_path / "x.env"),
        values=RUNBOOK,
        create=True,
        user="no-such-user-x",
        test=testmode,
    )
    assert ret.result is False and "user 'no-such-user-x' does not exist" in ret.comment
    assert not missing.exists() and not (tmp_path / "x.env").exists()


@pytest.mark.destructive_test  # sets the immutable attribute (chattr +i) on a temp file and dir
def test_unwritable_file_or_directory(states, modules, shared_dir, testmode):
    path = shared_dir / ".env"
    path.write_text(BACKEND_ENV, encoding="utf-8")
    checksum = sha256(path)
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        ret = states.dotenv.present(name=str(path), values=RUNBOOK, test=testmode)
        assert (
            ret.result is False
            and "is not writable (read-only file system or immutable" in ret.comment
        )
        assert preflight_problems(modules, str(path)) == [
            ret.comment.split("; nothing was changed")[0]
        ]
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    subprocess.run(["chattr", "+i", str(shared_dir)], check=True)
    try:
        ret = states.dotenv.present(name=str(path), values=RUNBOOK, test=testmode)
        assert ret.result is False and f"its directory {shared_dir} is not writable" in ret.comment
    finally:
        subprocess.run(["chattr", "-i", str(shared_dir)], check=True)
    assert sha256(path) == checksum and not list(shared_dir.glob("*.bak"))


@pytest.mark.destructive_test  # adds (and removes) a system user
def test_unreadable_file(modules, states, shared_dir, app_user):
    # the minion runs as root, which reads everything: the real fault needs a non-root uid, so the
    # module call runs with the real and effective uid of the test user (saved uid 0 brings root
    # back). The state itself cannot run so: salt's file server writes to root-only cache dirs.
    path = shared_dir / ".env"
    path.write_text(BACKEND_ENV, encoding="utf-8")
    path.chmod(0o600)
    checksum = sha256(path)
    preflight_problems(modules, str(shared_dir))  # load the module as root first
    os.setresuid(app_user.pw_uid, app_user.pw_uid, 0)
    try:
        errors = preflight_problems(modules, str(path))
        with pytest.raises(CommandExecutionError) as exc:
            modules.dotenv.plan(str(path), values=RUNBOOK)
    finally:
        os.setresuid(0, 0, 0)
    assert errors[0] == f"{path}: is not readable; fix its permissions"
    assert (
        f"{path}: is not writable (permission denied for uid {app_user.pw_uid}: run as root)"
        in errors[1]
    )
    assert exc.value.error.startswith(f"{path}: is not readable; fix its permissions; ")
    assert exc.value.error.endswith("; nothing was changed") and exc.value.info["errors"] == errors
    assert sha256(path) == checksum


def preflight_problems(modules, path, **kwargs):
    """dotenv.preflight's problems: one CommandExecutionError listing them in info["errors"]."""
    with pytest.raises(CommandExecutionError) as raised:
        modules.dotenv.preflight(path, **kwargs)
    assert raised.value.error == "\n".join(raised.value.info["errors"])
    return raised.value.info["errors"]


def test_preflight_messages(modules, tmp_path, env_file):
    assert modules.dotenv.preflight(str(env_file)) is True
    assert preflight_problems(modules, "relative/.env") == [
        "path 'relative/.env' is not an absolute path; give the .env file's full path"
    ]
    assert modules.dotenv.preflight(str(tmp_path / "missing.env"), create=True) is True
    assert (
        "create=True to create it" in preflight_problems(modules, str(tmp_path / "missing.env"))[0]
    )


def test_read_and_get(modules, env_file):
    data = modules.dotenv.read(str(env_file))
    assert data["DATABASE_URL"].startswith("postgresql://intranet:p%40ss#w0rd!@")
    assert data["JWT_REFRESH_SECRET"] == "abc123=="
    assert data["PRIVATE_KEY"] == "-----BEGIN KEY-----\nMIIB\nabc\n-----END KEY-----"
    assert modules.dotenv.get(str(env_file), "NOPE", "dflt") == "dflt"


# issue 12, item 13: every value of a key the formula did not define is possibly secret
EXTRA_OLD = (
    "SMTP_PASS=old-smtp-pw-1\nDB_PASS=old-db-pw-2\nDATABASE_URL=postgres://app:oldpw3@h/db\n"
)
EXTRA_NEW = {
    "SMTP_PASS": "new-smtp-pw-4",
    "DB_PASS": "new-db-pw-5",
    "DATABASE_URL": "postgres://app:p@ss-6@host/db",
    "MY_API_TOKEN": "tok-new-7",
    "PASSWD": "passwd-new-8",
}


def test_extra_values_and_old_values_never_shown(states, modules, env_file, caplog):
    env_file.write_text(BACKEND_ENV + EXTRA_OLD, encoding="utf-8")
    values = dict(RUNBOOK, **EXTRA_NEW)
    with caplog.at_level(logging.DEBUG):
        preview = states.dotenv.present(name=str(env_file), values=values, test=True)
        ret = states.dotenv.present(name=str(env_file), values=values)
        plan = modules.dotenv.plan(str(env_file), values={"SMTP_PASS": "other-smtp-9"})
    assert preview.result is None and ret.result is True
    logs = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("saltfactories.")
    )
    shown = repr(preview.raw) + repr(ret.raw) + repr(plan) + logs
    secrets = [*EXTRA_NEW.values(), "old-smtp-pw-1", "old-db-pw-2", "oldpw3", "p@ss-6", "ss-6"]
    for secret in [*secrets, "other-smtp-9", "p%40ss#w0rd", "abc123=="]:
        assert secret not in shown
    for key in ("SMTP_PASS", "DB_PASS", "DATABASE_URL"):
        assert preview.changes["values"][key] == {"old": "<secret>", "new": "<secret>"}
    assert preview.changes["values"]["MY_API_TOKEN"] == {"old": None, "new": "<secret>"}
    # item 14: an empty value is shown as empty
    assert preview.changes["values"]["REDIS_PASSWORD"] == {"old": None, "new": ""}
    assert ret.changes["values"]["QUEUE_ENABLED"] == {"old": "false", "new": "true"}
    assert modules.dotenv.get(str(env_file), "DATABASE_URL") == EXTRA_NEW["DATABASE_URL"]


def test_empty_password_shown_as_empty(states, env_file):
    env_file.write_text("REDIS_PASSWORD=''\n", encoding="utf-8")
    preview = states.dotenv.present(
        name=str(env_file), values={"REDIS_PASSWORD": "set-pw-10"}, test=True
    )
    assert preview.changes["values"]["REDIS_PASSWORD"] == {"old": "", "new": "<secret>"}
    env_file.write_text("REDIS_PASSWORD=set-pw-10\n", encoding="utf-8")
    preview = states.dotenv.present(name=str(env_file), values={"REDIS_PASSWORD": ""}, test=True)
    assert preview.changes["values"]["REDIS_PASSWORD"] == {"old": "<secret>", "new": ""}
    assert "set-pw-10" not in repr(preview.raw)


def test_proto_key_refused_file_unchanged(states, env_file):
    before = env_file.read_bytes()
    ret = states.dotenv.present(name=str(env_file), values={"__proto__": "x"})
    assert ret.result is False and ret.changes == {}
    assert "npm dotenv ignores it" in ret.comment
    assert env_file.read_bytes() == before


def test_non_utf8_bytes_kept_byte_for_byte(states, env_file):
    data = b"# Stra\xdfe \xff\nNAME=M\xfcller\nREDIS_HOST=localhost\nB=\xc3\n"
    env_file.write_bytes(data)
    ret = states.dotenv.present(name=str(env_file), values={"REDIS_HOST": "127.0.0.1", "N": 1})
    assert ret.result is True, ret.comment
    assert env_file.read_bytes() == data.replace(b"localhost", b"127.0.0.1") + b"N=1\n"
    assert states.dotenv.absent(name=str(env_file), keys=["N"]).result is True
    assert env_file.read_bytes() == data.replace(b"localhost", b"127.0.0.1")


# ---------------------------------------------------------------- the backup directory


def _modes(top, bottom):
    """Mode of every directory from ``top`` down to ``bottom`` (both included)."""
    found, path = {}, bottom
    while True:
        found[str(path)] = stat.S_IMODE(path.stat().st_mode)
        if path == top:
            return found
        path = path.parent


def test_backup_goes_below_the_backup_dir_not_into_the_app_dir(states, env_file, tmp_path):
    backup_dir = tmp_path / "var" / "backups" / "serverfix"
    mirror = backup_mirror(env_file.parent, backup_dir)
    preview = states.dotenv.present(
        name=str(env_file), values=RUNBOOK, test=True, backup_dir=str(backup_dir)
    )
    assert preview.result is None and f"(after a backup in {mirror}/)" in preview.comment
    assert not (tmp_path / "var").exists()  # the preview created nothing, not even the dir
    ret = states.dotenv.present(name=str(env_file), values=RUNBOOK, backup_dir=str(backup_dir))
    backup = Path(ret.changes["backup"])
    assert ret.result is True and backup.parent == mirror and f"(backup: {backup})" in ret.comment
    assert (
        backup.name.startswith(".env.serverfix-")
        and backup.read_text(encoding="utf-8") == BACKEND_ENV
    )
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    # every directory the backup made is root-only; the ones that were there keep their mode
    assert set(_modes(tmp_path / "var", mirror).values()) == {0o700}
    assert not list(env_file.parent.glob("*.bak"))


def test_backup_dir_empty_keeps_the_backup_next_to_the_file(states, env_file):
    ret = states.dotenv.present(name=str(env_file), values=RUNBOOK, backup_dir="")
    assert ret.result is True and Path(ret.changes["backup"]).parent == env_file.parent


def test_the_module_default_is_var_backups_serverfix(modules, env_file):
    mirror = backup_mirror(env_file.parent)
    try:
        made = modules.dotenv.set(str(env_file), {"REDIS_HOST": "127.0.0.1"})["backup"]
        assert Path(made).parent == mirror and Path(made).read_text(encoding="utf-8") == BACKEND_ENV
        assert not list(env_file.parent.glob("*.bak"))
    finally:
        shutil.rmtree(mirror, ignore_errors=True)


def test_a_backup_dir_that_cannot_be_made_changes_nothing(states, env_file, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    checksum = sha256(env_file)
    ret = states.dotenv.present(
        name=str(env_file), values=RUNBOOK, backup_dir=str(blocker / "backups")
    )
    assert ret.result is False and "cannot make the backup" in ret.comment
    assert str(blocker / "backups") in ret.comment and ret.changes == {}
    assert sha256(env_file) == checksum
