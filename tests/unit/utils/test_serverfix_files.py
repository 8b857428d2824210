"""
_utils/serverfix_files.py on real files in a temp directory: the atomic write keeps POSIX ACLs
(set with the real ``setfacl``) and ``user.*`` extended attributes, backups keep them too, an
attribute that cannot be copied is a refusal with the file untouched, and a file the formula
writes whole must be its own (:func:`check_owned` / :func:`write_owned`).
"""

import errno
import os
import shutil
import subprocess

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.host import immutable_dir
from tests.support.loader import import_salt_module
from tests.support.paths import UTILS_DIR

files = import_salt_module(UTILS_DIR / "serverfix_files.py", "serverfix_unit_files_xattr")

MARKER = b"# Managed by the serverfix Salt formula"
needs_acl = pytest.mark.skipif(
    shutil.which("setfacl") is None, reason="setfacl missing: apt-get install acl"
)


def _getfacl(path):
    out = subprocess.run(
        ["getfacl", "--absolute-names", "--omit-header", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def _shared_env(tmp_path):
    """A 0640 file readable by ``nobody`` through an ACL, with a ``user.*`` attribute."""
    path = tmp_path / ".env"
    path.write_bytes(b"A=1\n")
    path.chmod(0o640)
    subprocess.run(["setfacl", "-m", "u:nobody:r", str(path)], check=True)
    os.setxattr(path, "user.serverfix-test", b"label \xff")
    return path


@needs_acl
def test_atomic_write_keeps_acl_and_xattrs(tmp_path):
    path = _shared_env(tmp_path)
    acl, mode = _getfacl(path), path.stat().st_mode & 0o7777
    assert "user:nobody:r--" in acl

    files.atomic_write(str(path), b"A=2\n")

    assert path.read_bytes() == b"A=2\n"
    assert _getfacl(path) == acl
    assert path.stat().st_mode & 0o7777 == mode
    assert os.getxattr(path, "user.serverfix-test") == b"label \xff"
    # through a symlink, the target keeps them
    link = tmp_path / "link"
    link.symlink_to(path)
    files.atomic_write(str(link), b"A=3\n")
    assert link.is_symlink() and _getfacl(path) == acl
    assert os.getxattr(path, "user.serverfix-test") == b"label \xff"


@needs_acl
def test_atomic_write_with_explicit_mode_keeps_the_acl_entries(tmp_path):
    path = _shared_env(tmp_path)
    files.atomic_write(str(path), b"B=1\n", mode=0o644, uid=0, gid=0)
    assert "user:nobody:r--" in _getfacl(path)
    assert path.stat().st_mode & 0o777 == 0o644


@needs_acl
def test_no_acl_inherited_that_the_old_file_did_not_have(tmp_path):
    path = tmp_path / "plain"
    path.write_bytes(b"x\n")
    before = _getfacl(path)
    subprocess.run(["setfacl", "-d", "-m", "u:nobody:rw", str(tmp_path)], check=True)
    files.atomic_write(str(path), b"y\n")
    assert _getfacl(path) == before


@needs_acl
def test_backup_keeps_acl_and_xattrs(tmp_path):
    path = _shared_env(tmp_path)
    name = files.backup(str(path))
    assert open(name, "rb").read() == b"A=1\n"
    assert os.stat(name).st_mode & 0o777 == 0o600  # no one reads the backup through the mask
    assert "user:nobody:r--" in _getfacl(name)
    assert os.getxattr(name, "user.serverfix-test") == b"label \xff"
    # the rollback writes the backup's bytes back through the same path: access stays
    acl = _getfacl(path)
    files.atomic_write(str(path), open(name, "rb").read())
    assert _getfacl(path) == acl


def test_an_attribute_that_cannot_be_copied_is_a_refusal(tmp_path, monkeypatch):
    path = tmp_path / "conf"
    path.write_bytes(b"old\n")
    os.setxattr(path, "user.keep", b"1")
    real = os.setxattr

    # fault injection (a mock on purpose): root can set every attribute a file here has, so a
    # kernel or LSM that refuses one cannot be produced for real on this host
    def refuse(target, name, value, *args):
        if name == "user.keep":
            raise OSError(errno.EPERM, "Operation not permitted")
        return real(target, name, value, *args)

    monkeypatch.setattr(os, "setxattr", refuse)
    with pytest.raises(CommandExecutionError, match="user.keep") as raised:
        files.atomic_write(str(path), b"new\n")
    assert "was not changed" in str(raised.value)
    assert path.read_bytes() == b"old\n"
    assert sorted(os.listdir(tmp_path)) == ["conf"]  # no temp file left


OWNED_CASES = [
    ("absent", None),
    ("ours", None),
    ("admin file", "was not written by this formula"),
    ("empty file", "was not written by this formula"),
    ("symlink to ours", "is a symlink"),
    ("symlink to admin file", "is a symlink"),
    ("dangling symlink", "is a symlink"),
    ("directory", "not a regular file"),
    ("vendor dir", "directory of packages"),
]


@pytest.mark.parametrize(("case", "expected"), OWNED_CASES, ids=[c[0] for c in OWNED_CASES])
def test_check_owned(tmp_path, case, expected):
    etc, vendor = tmp_path / "etc", tmp_path / "usr-lib"
    etc.mkdir()
    vendor.mkdir()
    (tmp_path / "sysctl.conf").write_bytes(b"# admin\nvm.swappiness = 1\n")
    (tmp_path / "ours.conf").write_bytes(MARKER + b" (x)\n")
    target = etc / "99-zz.conf"
    if case == "ours":
        target.write_bytes(MARKER + b"\nvm.swappiness = 10\n")
    elif case == "admin file":
        target.write_bytes(b"vm.swappiness = 10\n")
    elif case == "empty file":
        target.write_bytes(b"")
    elif case == "symlink to ours":
        target.symlink_to(tmp_path / "ours.conf")
    elif case == "symlink to admin file":
        target.symlink_to("../sysctl.conf")
    elif case == "dangling symlink":
        target.symlink_to(tmp_path / "nowhere")
    elif case == "directory":
        target.mkdir()
    elif case == "vendor dir":
        target = vendor / "99-zz.conf"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    if expected is None:
        assert files.check_owned(str(target), MARKER, [str(vendor)]) is True
        files.write_owned(str(target), MARKER + b"\nnew\n", MARKER, [str(vendor)])
        assert target.read_bytes() == MARKER + b"\nnew\n" and not target.is_symlink()
        return
    with pytest.raises(CommandExecutionError) as raised:
        files.check_owned(str(target), MARKER, [str(vendor)])
    assert expected in str(raised.value) and str(target) in str(raised.value)
    assert raised.value.info["errors"] and "another file name" in str(raised.value)
    with pytest.raises(CommandExecutionError):
        files.write_owned(str(target), MARKER + b"\nnew\n", MARKER, [str(vendor)])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "path", ["/usr/lib/sysctl.d/99-x.conf", "/lib/sysctl.d/99-x.conf", "/run/sysctl.d/99-x.conf"]
)
def test_system_vendor_directories_are_refused(path):
    with pytest.raises(CommandExecutionError, match="directory of packages"):
        files.check_owned(path, MARKER)


def test_vendor_dir_reached_through_a_symlinked_directory(tmp_path):
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (tmp_path / "alias").symlink_to(vendor)
    with pytest.raises(CommandExecutionError, match="directory of packages"):
        files.check_owned(str(tmp_path / "alias" / "x.conf"), MARKER, [str(vendor)])


# ---------------------------------------------------------------- the backup directory


@pytest.mark.parametrize(
    "path, backup_dir, expected",
    [
        (
            "/var/www/intranet/backend/.env",
            "/var/backups/serverfix",
            "/var/backups/serverfix/var/www/intranet/backend/.env",
        ),
        (
            "/etc/redis/redis.conf",
            "/var/backups/serverfix/",
            "/var/backups/serverfix/etc/redis/redis.conf",
        ),
        ("/etc/fstab", "/srv//backups/./x/..", "/srv/backups/etc/fstab"),
        ("/var/www/app/../app/.env", "/b", "/b/var/www/app/.env"),
        ("/etc/fstab", "", "/etc/fstab"),  # '': next to the file, as before
    ],
)
def test_backup_base_mirrors_the_path_below_the_dir(path, backup_dir, expected):
    assert files.backup_base(path, backup_dir) == expected
    assert files.backup_location(path, backup_dir) == os.path.dirname(expected) + "/"


def test_backup_base_follows_a_symlink_to_the_file_that_changes(tmp_path):
    real = tmp_path / "shared" / ".env"
    real.parent.mkdir()
    real.write_bytes(b"A=1\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / ".env").symlink_to(real)
    assert files.backup_base(str(tmp_path / "app" / ".env"), "/b") == f"/b{real}"


def test_backup_goes_below_the_dir_made_0700_and_prunes_only_there(tmp_path):
    path = tmp_path / "app" / ".env"
    path.parent.mkdir()
    path.write_bytes(b"A=1\n")
    beside = [f"{path}.serverfix-2020010{i}T000000.bak" for i in range(3)]
    for i, name in enumerate(beside):  # left by an earlier version, older than any new one
        with open(name, "wb") as handle:
            handle.write(b"old\n")
        os.utime(name, (1_600_000_000 + i, 1_600_000_000 + i))
    backup_dir = tmp_path / "backups"
    made = [files.backup(str(path), keep=2, backup_dir=str(backup_dir)) for _ in range(3)]
    mirror = f"{backup_dir}{path.parent}"
    assert all(os.path.dirname(name) == mirror for name in made)
    assert not os.path.exists(made[0]) and all(os.path.exists(n) for n in made[1:])  # pruned
    assert all(os.path.exists(name) for name in beside)  # never deleted, never moved
    assert os.stat(made[-1]).st_mode & 0o777 == 0o600
    directory = mirror
    while directory != str(tmp_path):  # every directory it made is 0700
        assert os.stat(directory).st_mode & 0o777 == 0o700, directory
        directory = os.path.dirname(directory)
    # the rollback sees both places, oldest first; pruning sees only the directory
    assert files.list_backups(str(path), backup_dir=str(backup_dir)) == beside + made[1:]
    assert files.list_backups(str(path), backup_dir=str(backup_dir), beside=False) == made[1:]
    assert files.list_backups(str(path)) == beside


@needs_acl
def test_backup_in_the_dir_keeps_acl_and_xattrs(tmp_path):
    path = _shared_env(tmp_path)
    name = files.backup(str(path), backup_dir=str(tmp_path / "b"))
    assert name.startswith(f"{tmp_path}/b{tmp_path}/.env.serverfix-")
    assert os.stat(name).st_mode & 0o777 == 0o600
    assert "user:nobody:r--" in _getfacl(name)
    assert os.getxattr(name, "user.serverfix-test") == b"label \xff"


def test_backup_dir_problems(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    assert files.backup_dir_problems("") == []
    assert files.backup_dir_problems(str(tmp_path / "new" / "dir")) == []
    assert not (tmp_path / "new").exists()  # read-only: made when the first backup needs it
    for wanted in (blocker, blocker / "below"):
        (problem,) = files.backup_dir_problems(str(wanted))
        assert f"{blocker} exists and is not a directory" in problem


def test_backup_dir_problems_unwritable(tmp_path):
    with immutable_dir(tmp_path / "locked") as locked:
        (problem,) = files.backup_dir_problems(str(locked / "serverfix"))
        assert f"{locked}/serverfix cannot be created (in {locked})" in problem
        (problem,) = files.backup_dir_problems(str(locked))
        assert f"{locked} cannot be written" in problem


@pytest.mark.parametrize("bad", ["backups", "./b", 5, None, "/b\nc"])
def test_check_backup_dir_refuses_what_is_not_absolute(bad):
    with pytest.raises(SaltInvocationError, match="backup_dir .* is not an absolute path"):
        files.check_backup_dir(bad)
    assert files.check_backup_dir("") == "" and files.check_backup_dir("/b") == "/b"
