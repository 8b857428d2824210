"""
sysctl_persist through the real Salt loader against the real kernel (/proc/sys) and the real boot
tools (systemd-sysctl, procps `sysctl --system`). The sysctl.d directories are temporary ones;
vm.swappiness and vm.vfs_cache_pressure are restored after every test.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.loader import DEFAULTS
from tests.support.swap import read_sysctl, write_sysctl

pytestmark = pytest.mark.destructive_test

VALUES = {"vm.swappiness": 10, "vm.vfs_cache_pressure": 50}
SYSTEMD_SYSCTL = next(
    (
        p
        for p in ("/lib/systemd/systemd-sysctl", "/usr/lib/systemd/systemd-sysctl")
        if os.path.exists(p)
    ),
    None,
)


@pytest.fixture
def confdirs(swap_dir):
    """A private copy of the sysctl.d layout: /etc/sysctl.d (with Debian's 99-sysctl.conf link to
    /etc/sysctl.conf), /run/sysctl.d and /usr/lib/sysctl.d, plus sysctl.conf."""
    layout = {name: os.path.join(swap_dir, name) for name in ("etc", "run", "usr")}
    for path in layout.values():
        os.makedirs(path)
    conf = os.path.join(swap_dir, "sysctl.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write("# /etc/sysctl.conf - Configuration file for setting system variables\n")
    os.symlink(conf, os.path.join(layout["etc"], "99-sysctl.conf"))
    layout["conf"] = conf
    layout["target"] = os.path.join(layout["etc"], "99-zz-serverfix.conf")
    layout["dirs"] = [layout["etc"], layout["run"], layout["usr"]]
    return layout


def _present(states, confdirs, test, values=None):
    return states.sysctl_persist.present(
        name=confdirs["target"],
        values=values or VALUES,
        dirs=confdirs["dirs"],
        sysctl_conf=confdirs["conf"],
        test=test,
    )


def test_set_now_and_persisted_with_exact_prediction(states, confdirs, sysctl_restore):
    write_sysctl("vm.swappiness", 61)
    write_sysctl("vm.vfs_cache_pressure", 101)

    predicted = _present(states, confdirs, test=True)
    assert predicted.result is None, predicted.comment
    assert predicted.changes == {
        "vm.swappiness": {"old": "61", "new": "10"},
        "vm.vfs_cache_pressure": {"old": "101", "new": "50"},
        confdirs["target"]: {
            "old": None,
            "new": {"vm.swappiness": "10", "vm.vfs_cache_pressure": "50"},
        },
    }
    assert (read_sysctl("vm.swappiness"), read_sysctl("vm.vfs_cache_pressure")) == ("61", "101")
    assert not os.path.exists(confdirs["target"]), "test=True wrote the file"

    real = _present(states, confdirs, test=False)
    assert real.result is True, real.comment
    assert real.changes == predicted.changes
    assert (read_sysctl("vm.swappiness"), read_sysctl("vm.vfs_cache_pressure")) == ("10", "50")
    with open(confdirs["target"], encoding="utf-8") as handle:
        text = handle.read()
    assert text.endswith("vm.swappiness = 10\nvm.vfs_cache_pressure = 50\n") and text.startswith(
        "# Managed by"
    )
    st = os.stat(confdirs["target"])
    assert (st.st_mode & 0o777, st.st_uid) == (0o644, 0)

    for test in (True, False):
        again = _present(states, confdirs, test=test)
        assert again.result is True and again.changes == {}, again.comment

    # someone ran `sysctl -w` by hand: only the running value is put back
    write_sysctl("vm.swappiness", 60)
    fixed = _present(states, confdirs, test=False)
    assert fixed.changes == {"vm.swappiness": {"old": "60", "new": "10"}}


@pytest.mark.skipif(SYSTEMD_SYSCTL is None, reason="systemd-sysctl not installed")
def test_order_beats_99_sysctl_conf_with_the_real_boot_tools(
    states, modules, confdirs, swap_dir, sysctl_restore
):
    # the runbook's way: values appended to /etc/sysctl.conf (read at boot as 99-sysctl.conf)
    with open(confdirs["conf"], "a", encoding="utf-8") as handle:
        handle.write("vm.swappiness = 33\n")
    late = os.path.join(
        confdirs["usr"], "99-zzz-vendor.conf"
    )  # sorts after ours, from another directory
    with open(late, "w", encoding="utf-8") as handle:
        handle.write("vm.vfs_cache_pressure = 200\n")

    order = modules.sysctl_persist.config_files(confdirs["dirs"])
    names = [os.path.basename(p) for p in order]
    assert names == ["99-sysctl.conf", "99-zzz-vendor.conf"]  # ours is not written yet

    ret = _present(states, confdirs, test=False)
    assert ret.result is True, ret.comment
    names = [os.path.basename(p) for p in modules.sysctl_persist.config_files(confdirs["dirs"])]
    assert names.index("99-zz-serverfix.conf") > names.index("99-sysctl.conf")
    warnings = ret.warnings
    assert len(warnings) == 2, warnings
    assert any(
        late in w and "vm.vfs_cache_pressure = 200" in w and "systemd-sysctl" in w for w in warnings
    )
    assert any(
        confdirs["conf"] in w and "vm.swappiness = 33" in w and "sysctl --system" in w
        for w in warnings
    )
    assert "Warning:" in ret.comment

    # What the real tools do with exactly these files, in a private mount namespace where the
    # temporary directories replace the system ones (the kernel settings are the real ones).
    boot = _run_with_private_sysctl_dirs(confdirs, swap_dir, [SYSTEMD_SYSCTL])
    assert boot == {
        "vm.swappiness": "10",
        "vm.vfs_cache_pressure": "200",
    }  # ours beats 99-sysctl.conf, as warned
    procps = _run_with_private_sysctl_dirs(confdirs, swap_dir, ["sysctl", "--system"])
    assert procps == {
        "vm.swappiness": "33",
        "vm.vfs_cache_pressure": "200",
    }  # sysctl.conf last, as warned

    os.unlink(late)
    with open(confdirs["conf"], "w", encoding="utf-8") as handle:
        handle.write("vm.swappiness = 10\n")  # the same value is no conflict
    quiet = _present(states, confdirs, test=False)
    assert quiet.result is True and not quiet.warnings, quiet.warnings


def _run_with_private_sysctl_dirs(confdirs, scratch, argv):
    empty = os.path.join(scratch, "empty")
    os.makedirs(empty, exist_ok=True)
    binds = [(confdirs["etc"], "/etc/sysctl.d"), (confdirs["conf"], "/etc/sysctl.conf")]
    binds += [(confdirs["run"], d) for d in ("/run/sysctl.d",) if os.path.isdir(d)]
    binds += [(confdirs["usr"], "/usr/lib/sysctl.d")]
    binds += [
        (empty, d)
        for d in ("/lib/sysctl.d", "/usr/local/lib/sysctl.d")
        if os.path.isdir(d) and os.path.realpath(d) != "/usr/lib/sysctl.d"
    ]
    script = "".join(f'mount --bind "{src}" "{dst}" && ' for src, dst in binds) + 'exec "$@"'
    subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        check=True,
        capture_output=True,
    )
    return {key: read_sysctl(key) for key in VALUES}


def test_bad_input_is_refused_before_anything_changes(modules, states, confdirs, sysctl_restore):
    before = {key: read_sysctl(key) for key in VALUES}
    cases = [
        ({"vm.swapiness": 10}, "vm.swapiness: this kernel has no such setting"),
        ({"vm swappiness": 10}, "'vm swappiness' is not a sysctl key"),
        ({"vm.swappiness": "10\nkernel.panic = 1"}, "is not a single-line value"),
        ({}, "expected a mapping"),
    ]
    for values, expected in cases:
        with pytest.raises((CommandExecutionError, SaltInvocationError)) as raised:
            modules.sysctl_persist.plan(confdirs["target"], values, dirs=confdirs["dirs"])
        if values:  # a mapping: one error listing every problem
            assert any(expected in e for e in raised.value.info["errors"]), (
                values,
                raised.value.info,
            )
        else:
            assert isinstance(raised.value, SaltInvocationError) and expected in str(raised.value)
    both = {"vm.swapiness": 10, "vm swappiness": 10}
    with pytest.raises(CommandExecutionError) as raised:
        modules.sysctl_persist.plan(confdirs["target"], both, dirs=confdirs["dirs"])
    assert len(raised.value.info["errors"]) == 2 and raised.value.error == "\n".join(
        raised.value.info["errors"]
    )
    with pytest.raises(
        CommandExecutionError, match="^Nothing was changed: vm.nope: this kernel has no such"
    ):
        modules.sysctl_persist.apply(
            confdirs["target"], {"vm.swappiness": 10, "vm.nope": 1}, dirs=confdirs["dirs"]
        )
    for test in (True, False):
        ret = _present(states, confdirs, test=test, values={"vm swappiness": 10})
        assert (ret.result, ret.changes) == (False, {}), ret
        assert (
            ret.comment
            == "Nothing was changed: 'vm swappiness' is not a sysctl key (e.g. vm.swappiness)"
        )
    assert not os.path.exists(confdirs["target"])
    assert {key: read_sysctl(key) for key in VALUES} == before


def test_read_only_proc_sys_is_a_clear_error(minion_opts, confdirs, sysctl_restore):
    # real fault: /proc/sys mounted read-only in a private mount namespace, as systemd-nspawn does
    salt_call = os.path.join(os.path.dirname(sys.executable), "salt-call")
    write_sysctl("vm.swappiness", 61)
    script = 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"'
    argv = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        salt_call,
        "-c",
        os.path.dirname(minion_opts["conf_file"]),
        "--local",
        "--out=json",
        "--log-level=quiet",
        "state.single",
        "sysctl_persist.present",
        confdirs["target"],
        "values=" + json.dumps(VALUES),
        "dirs=" + json.dumps(confdirs["dirs"]),
        f"sysctl_conf={confdirs['conf']}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    (result,) = json.loads(out.stdout)["local"].values()
    assert result["result"] is False, result
    assert (
        "not writable here" in result["comment"]
        and "SYSTEMD_NSPAWN_API_VFS_WRITABLE" in result["comment"]
    )
    assert "Nothing was changed" in result["comment"]
    assert not os.path.exists(confdirs["target"]) and read_sysctl("vm.swappiness") == "61"


def _tree(root):
    """``{path: (bytes or link target)}`` of everything under ``root``: nothing may change."""
    found = {}
    for directory, subdirs, names in os.walk(root):
        for name in names + subdirs:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                found[path] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    found[path] = ("file", handle.read())
    return found


def _not_ours_cases(confdirs):
    link = os.path.join(confdirs["etc"], "99-sysctl.conf")  # Debian's link to sysctl.conf
    admin = os.path.join(confdirs["etc"], "60-admin.conf")
    with open(admin, "wb") as handle:
        handle.write(b"# tuned by hand\nvm.swappiness = 1\n")
    vendor = os.path.join(confdirs["usr"], "99-zz-serverfix.conf")
    run = os.path.join(confdirs["run"], "99-zz-serverfix.conf")
    return [
        (link, "is a symlink"),
        (admin, "was not written by this formula"),
        (vendor, "directory of packages"),
        (run, "directory of packages"),
    ]


def test_a_file_that_is_not_ours_is_refused_before_anything_changes(
    modules, states, confdirs, swap_dir, sysctl_restore
):
    write_sysctl("vm.swappiness", 61)
    for path, expected in _not_ours_cases(confdirs):
        before = _tree(swap_dir)
        with pytest.raises(CommandExecutionError) as raised:
            modules.sysctl_persist.plan(path, VALUES, dirs=confdirs["dirs"])
        assert any(expected in e and path in e for e in raised.value.info["errors"]), raised
        with pytest.raises(CommandExecutionError, match="another file name"):
            modules.sysctl_persist.preflight(path, VALUES, dirs=confdirs["dirs"])
        with pytest.raises(CommandExecutionError, match="^Nothing was changed: "):
            modules.sysctl_persist.apply(path, VALUES, dirs=confdirs["dirs"])
        for test in (True, False):
            ret = states.sysctl_persist.present(
                name=path, values=VALUES, dirs=confdirs["dirs"], test=test
            )
            assert (ret.result, ret.changes) == (False, {}), ret
            assert expected in ret.comment and ret.comment.startswith("Nothing was changed")
        assert _tree(swap_dir) == before, path
        assert read_sysctl("vm.swappiness") == "61"
    # our own file is rewritten; one without the marker is not, even after it was ours
    assert _present(states, confdirs, test=False).result is True
    with open(confdirs["target"], "rb") as handle:
        ours = handle.read()
    with open(confdirs["target"], "wb") as handle:
        handle.write(ours.split(b"\n", 1)[1])  # the header removed by someone
    ret = _present(states, confdirs, test=False, values={"vm.swappiness": 11})
    assert ret.result is False and "was not written by this formula" in ret.comment


LATIN1 = b"# r\xe9glages du noyau, \xe9crits \xe0 la main (Latin-1)\n"


def test_bytes_that_are_not_utf8_are_read_and_kept(states, confdirs, sysctl_restore):
    with open(confdirs["conf"], "ab") as handle:
        handle.write(LATIN1 + b"vm.swappiness = 33\n")
    late = os.path.join(confdirs["usr"], "99-zzz-vendor.conf")
    with open(late, "wb") as handle:
        handle.write(LATIN1 + b"vm.vfs_cache_pressure = 2\xe900\n")
    for test in (True, False):
        ret = _present(states, confdirs, test=test)
        assert ret.result is not False, ret.comment
        assert len(ret.warnings) == 2 and "2\\xe900" in " ".join(ret.warnings), ret.warnings
        json.dumps(ret.comment).encode("utf-8")
    # an admin's comment in our own file (Latin-1, CRLF) stays byte for byte across a change
    with open(confdirs["target"], "rb") as handle:
        ours = handle.read()
    note = b"; gard\xe9 par l'admin\r\n"
    with open(confdirs["target"], "wb") as handle:
        handle.write(ours + note)
    ret = _present(states, confdirs, test=False, values={**VALUES, "vm.swappiness": 11})
    assert ret.result is True and confdirs["target"] in ret.changes, ret.comment
    with open(confdirs["target"], "rb") as handle:
        assert handle.read() == ours.replace(b"swappiness = 10", b"swappiness = 11") + note
    assert (
        _present(states, confdirs, test=True, values={**VALUES, "vm.swappiness": 11}).changes == {}
    )


@pytest.mark.skipif(not shutil.which("setfacl"), reason="setfacl missing: apt-get install acl")
def test_managed_file_keeps_its_acl_and_xattrs(states, confdirs, sysctl_restore):
    assert _present(states, confdirs, test=False).result is True
    subprocess.run(["setfacl", "-m", "u:nobody:r", confdirs["target"]], check=True)
    os.setxattr(confdirs["target"], "user.serverfix-test", b"kept")
    acl = subprocess.run(
        ["getfacl", "-p", confdirs["target"]], check=True, capture_output=True, text=True
    ).stdout
    ret = _present(states, confdirs, test=False, values={**VALUES, "vm.swappiness": 12})
    assert ret.result is True and confdirs["target"] in ret.changes, ret.comment
    after = subprocess.run(
        ["getfacl", "-p", confdirs["target"]], check=True, capture_output=True, text=True
    ).stdout
    assert after == acl and "user:nobody:r--" in after
    assert os.getxattr(confdirs["target"], "user.serverfix-test") == b"kept"


def test_formula_preflight_names_the_pillar_key(modules, confdirs):
    # Debian's /etc/sysctl.d/99-sysctl.conf given as serverfix:swap:sysctl_file
    link = os.path.join(confdirs["etc"], "99-sysctl.conf")
    config = {**DEFAULTS, "swap": {**DEFAULTS["swap"], "enabled": True, "sysctl_file": link}}
    with pytest.raises(CommandExecutionError) as raised:
        modules.serverfix.preflight(config, pillar={}, phases=["swap"])
    mine = [e for e in raised.value.info["errors"] if link in e]
    assert len(mine) == 1 and mine[0].startswith("serverfix:swap:sysctl_file: "), mine
    assert "is a symlink" in mine[0] and os.path.islink(link)


def test_the_older_version_is_backed_up_below_the_backup_dir(states, tmp_path):
    """No kernel write: the values wanted are the running ones, only the file changes."""
    dirs = [str(tmp_path / name) for name in ("etc", "run", "usr")]
    for path in dirs:
        os.makedirs(path)
    conf = tmp_path / "sysctl.conf"
    conf.write_text("", encoding="utf-8")
    target = os.path.join(dirs[0], "99-zz-serverfix.conf")
    running = {key: int(read_sysctl(key)) for key in VALUES}
    old = "# Managed by the serverfix Salt formula\nvm.swappiness = 1\n"
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(old)
    backup_dir = tmp_path / "backups"
    kwargs = {"name": target, "values": running, "dirs": dirs, "sysctl_conf": str(conf)}
    preview = states.sysctl_persist.present(test=True, backup_dir=str(backup_dir), **kwargs)
    assert preview.result is None and set(preview.changes) == {target}, preview.comment
    assert not backup_dir.exists()
    ret = states.sysctl_persist.present(backup_dir=str(backup_dir), **kwargs)
    assert ret.result is True and set(ret.changes) == {target}, ret.comment
    [backup] = (backup_dir / dirs[0].lstrip("/")).glob("99-zz-serverfix.conf.serverfix-*.bak")
    assert backup.read_text(encoding="utf-8") == old and f"(backup {backup})" in ret.comment
    assert not [name for name in os.listdir(dirs[0]) if name.endswith(".bak")]
