"""
swapfile through the real Salt loader, with real swap: fallocate, mkswap, swapon/swapoff on this
machine's kernel. 64M files on ext4 (and small loop-mounted ext2/xfs/btrfs/ext4 file systems the
tests make), a temporary fstab each: the real /etc/fstab is never touched here.
"""

import glob
import json
import os
import stat
import subprocess
import sys

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.swap import active_swap, loop_fs, snapshot

pytestmark = pytest.mark.destructive_test

SIZE = "64M"
SIZE_BYTES = 64 << 20
FSTAB_BEFORE = (
    "# /etc/fstab: static file system information.\nUUID=abcd / ext4 errors=remount-ro 0 1\n"
)


def problems(func, *args, **kwargs):
    """The problems ``func`` refuses with: one CommandExecutionError, each in info["errors"]."""
    with pytest.raises(CommandExecutionError) as raised:
        func(*args, **kwargs)
    errors = raised.value.info["errors"]
    assert raised.value.error == "\n".join(errors)
    return errors


@pytest.fixture
def fstab(swap_dir):
    path = os.path.join(swap_dir, "fstab")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(FSTAB_BEFORE)
    return path


def _lines_for(fstab_path, swap_path):
    with open(fstab_path, encoding="utf-8") as handle:
        return [line for line in handle.read().splitlines() if line.split()[:1] == [swap_path]]


def _present(states, path, fstab, test, size=SIZE):
    return states.swapfile.present(name=path, size=size, fstab=fstab, test=test)


def test_create_predicts_exactly_then_is_idempotent(states, modules, swap_dir, fstab):
    path = os.path.join(swap_dir, "swap-create")
    before = snapshot(swap_dir, fstab)

    predicted = _present(states, path, fstab, test=True)
    assert predicted.result is None, predicted.comment
    assert snapshot(swap_dir, fstab) == before, "test=True touched something"
    assert predicted.changes == {
        "file": {"old": None, "new": "64M"},
        "active": {"old": False, "new": True},
        "fstab": {"old": [], "new": [f"{path} none swap sw 0 0"]},
    }

    real = _present(states, path, fstab, test=False)
    assert real.result is True, real.comment
    assert real.changes == predicted.changes
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size) == (0o600, 0, 0, SIZE_BYTES)
    assert active_swap(path) == (
        SIZE_BYTES // 1024 - 4,
        0,
    )  # the kernel counts pages after the header
    assert _lines_for(fstab, path) == [f"{path} none swap sw 0 0"]
    with open(fstab, encoding="utf-8") as handle:
        assert handle.read() == FSTAB_BEFORE + f"{path} none swap sw 0 0\n"
    assert "fallocate" in real.comment

    status = modules.swapfile.status(path, fstab=fstab)
    assert status["active"] and status["size_bytes"] == SIZE_BYTES and status["header_ok"]
    assert not status["holes"] and status["fs_type"] == "ext4"

    for test in (True, False):
        again = _present(states, path, fstab, test=test)
        assert again.result is True and again.changes == {}, again.comment
    assert _lines_for(fstab, path) == [f"{path} none swap sw 0 0"]


def test_swapped_off_by_hand_is_swapped_on_again(states, swap_dir, fstab):
    # Ansible's swap role leaves swap off after a manual swapoff; this must not
    path = os.path.join(swap_dir, "swap-off")
    assert _present(states, path, fstab, test=False).result is True
    subprocess.run(["swapoff", path], check=True)
    predicted = _present(states, path, fstab, test=True)
    assert predicted.result is None and predicted.changes == {"active": {"old": False, "new": True}}
    real = _present(states, path, fstab, test=False)
    assert real.result is True and real.changes == predicted.changes
    assert active_swap(path) is not None


@pytest.mark.parametrize("new_size, new_bytes", [("96M", 96 << 20), ("32M", 32 << 20)])
def test_resize_predicts_exactly(states, swap_dir, fstab, new_size, new_bytes):
    path = os.path.join(swap_dir, "swap-resize")
    assert _present(states, path, fstab, test=False).result is True
    before = snapshot(swap_dir, fstab)

    predicted = _present(states, path, fstab, test=True, size=new_size)
    assert predicted.result is None
    assert predicted.changes == {"file": {"old": "64M", "new": new_size}}
    assert "resize" in predicted.comment and "swap" in predicted.comment
    assert snapshot(swap_dir, fstab) == before

    real = _present(states, path, fstab, test=False, size=new_size)
    assert real.result is True, real.comment
    assert real.changes == predicted.changes
    assert os.path.getsize(path) == new_bytes
    assert active_swap(path) == (new_bytes // 1024 - 4, 0)
    assert _lines_for(fstab, path) == [f"{path} none swap sw 0 0"]
    assert not os.path.exists(os.path.join(swap_dir, ".swap-resize.serverfix-new"))


def test_resize_refused_when_memory_cannot_take_what_is_in_swap(
    modules, states, swap_dir, fstab, monkeypatch
):
    path = os.path.join(swap_dir, "swap-mem")
    assert _present(states, path, fstab, test=False).result is True
    before = snapshot(swap_dir, fstab)
    # Fault injection (declared mock): this 24 GB machine cannot be made short of memory for real,
    # so MemAvailable is replaced by 100 MiB, less than the headroom swapoff needs.
    monkeypatch.setitem(modules.swapfile.plan.__globals__, "_mem_available", lambda: 100 << 20)
    errors = problems(modules.swapfile.plan, path, "96M", fstab=fstab)
    assert any("size 96M: cannot resize" in e and "memory is available" in e for e in errors), (
        errors
    )
    with pytest.raises(Exception, match="Nothing was changed: .*cannot resize"):
        modules.swapfile.ensure(path, "96M", fstab=fstab)
    assert snapshot(swap_dir, fstab) == before
    assert active_swap(path) is not None


def test_absent_predicts_exactly_and_removes_everything(states, swap_dir, fstab):
    path = os.path.join(swap_dir, "swap-absent")
    assert _present(states, path, fstab, test=False).result is True
    before = snapshot(swap_dir, fstab)

    predicted = states.swapfile.absent(name=path, fstab=fstab, test=True)
    assert predicted.result is None
    assert predicted.changes == {
        "active": {"old": True, "new": False},
        "fstab": {"old": [f"{path} none swap sw 0 0"], "new": []},
        "file": {"old": "64M", "new": None},
    }
    assert snapshot(swap_dir, fstab) == before

    real = states.swapfile.absent(name=path, fstab=fstab, test=False)
    assert real.result is True and real.changes == predicted.changes
    assert not os.path.exists(path) and active_swap(path) is None
    with open(fstab, encoding="utf-8") as handle:
        assert handle.read() == FSTAB_BEFORE
    again = states.swapfile.absent(name=path, fstab=fstab, test=False)
    assert again.result is True and again.changes == {}


def test_fstab_ends_with_exactly_one_line(states, swap_dir, fstab):
    path = os.path.join(swap_dir, "swap-dup")
    with open(
        fstab, "a", encoding="utf-8"
    ) as handle:  # two lines for one file: a hand-run runbook, twice
        handle.write(f"{path} none swap sw 0 0\n{path} swap swap defaults 0 0\n")
    predicted = _present(states, path, fstab, test=True)
    assert predicted.changes["fstab"] == {
        "old": [f"{path} none swap sw 0 0", f"{path} swap swap defaults 0 0"],
        "new": [f"{path} none swap sw 0 0"],
    }
    real = _present(states, path, fstab, test=False)
    assert real.result is True and real.changes == predicted.changes
    assert _lines_for(fstab, path) == [f"{path} none swap sw 0 0"]
    # below the states' default backup_dir, the fstab's path mirrored; none beside it
    backups = glob.glob(f"/var/backups/serverfix{os.path.realpath(fstab)}.serverfix-*.bak")
    assert len(backups) == 1, "the old fstab is kept as a backup"
    assert not [n for n in os.listdir(swap_dir) if n.startswith("fstab.serverfix-")]


def test_admins_own_fstab_options_are_kept(states, swap_dir, fstab):
    path = os.path.join(swap_dir, "swap-pri")
    with open(fstab, "a", encoding="utf-8") as handle:
        handle.write(f"{path} none swap sw,pri=5 0 0\n")
    real = _present(states, path, fstab, test=False)
    assert real.result is True and "fstab" not in real.changes
    assert _lines_for(fstab, path) == [f"{path} none swap sw,pri=5 0 0"]


def test_a_file_that_is_not_swap_is_never_overwritten(states, modules, swap_dir, fstab):
    path = os.path.join(swap_dir, "precious")
    with open(path, "wb") as handle:
        handle.write(b"database dump\n" * 1000)
    before = snapshot(swap_dir, fstab)
    for test in (True, False):
        ret = _present(states, path, fstab, test=test)
        assert ret.result is False and "not a swap area" in ret.comment and path in ret.comment
        assert ret.changes == {}
    absent = states.swapfile.absent(name=path, fstab=fstab)
    assert absent.result is False and absent.changes == {} and "may hold data" in absent.comment
    assert snapshot(swap_dir, fstab) == before
    assert any("not a swap area" in e for e in problems(modules.swapfile.preflight, path, SIZE))
    assert any(
        "not a swap area" in e for e in problems(modules.swapfile.plan_remove, path, fstab=fstab)
    )
    with pytest.raises(CommandExecutionError, match="^Nothing was changed: .*not a swap area"):
        modules.swapfile.remove(path, fstab=fstab)


def test_file_with_holes_is_rewritten_and_swapped_on(states, swap_dir, fstab):
    # the classic mistake: truncate/dd seek + mkswap; swapon refuses it ("it appears to have holes")
    path = os.path.join(swap_dir, "swap-holes")
    with open(path, "wb") as handle:
        handle.truncate(SIZE_BYTES)
    os.chmod(path, 0o600)
    subprocess.run(["mkswap", path], check=True, capture_output=True)
    assert subprocess.run(["swapon", path], capture_output=True, check=False).returncode != 0

    predicted = _present(states, path, fstab, test=True)
    assert predicted.result is None
    assert predicted.changes["file"] == {
        "old": "64M (it has holes (swapon rejects those))",
        "new": "64M",
    }
    real = _present(states, path, fstab, test=False)
    assert real.result is True, real.comment
    assert real.changes == predicted.changes
    assert active_swap(path) is not None
    st = os.stat(path)
    assert st.st_blocks * 512 >= st.st_size


def test_zero_fill_where_the_file_system_cannot_fallocate(modules, swap_dir, fstab):
    # ext2 has no extents: fallocate says EOPNOTSUPP for real, the module writes zeros instead
    with loop_fs(swap_dir, "ext2", 128) as mnt:
        path = os.path.join(mnt, "swapfile")
        done = modules.swapfile.ensure(path, SIZE, fstab=fstab, reserve="0")
        assert done["method"] == "zero", done
        assert active_swap(path) is not None
        assert modules.swapfile.ensure(path, SIZE, fstab=fstab, reserve="0")["changes"] == {}
        modules.swapfile.remove(path, fstab=fstab)


def test_zero_fill_when_swapon_rejects_the_fallocated_file(modules, swap_dir, fstab, monkeypatch):
    # Fault injection (declared mock): kernels before 4.18 on XFS (and some ext4) reject fallocated
    # swap files with EINVAL; this 6.x kernel accepts them, so the first swapon is made to say so.
    path = os.path.join(swap_dir, "swap-einval")
    glb = modules.swapfile.ensure.__globals__
    real_call, calls = glb["_swap_call"], []

    def first_swapon_rejected(name, target):
        calls.append(name)
        if name == "swapon" and calls.count("swapon") == 1:
            return 22  # EINVAL
        return real_call(name, target)

    monkeypatch.setitem(glb, "_swap_call", first_swapon_rejected)
    done = modules.swapfile.ensure(path, SIZE, fstab=fstab)
    assert done["method"] == "zero" and active_swap(path) is not None


def test_btrfs_needs_no_copy_on_write(states, modules, swap_dir, fstab):
    with loop_fs(swap_dir, "btrfs", 1024) as mnt:
        # a swap file made the naive way on btrfs (fallocate + mkswap): swapon says EINVAL for real
        naive = os.path.join(mnt, "naive")
        subprocess.run(["fallocate", "-l", SIZE, naive], check=True)
        os.chmod(naive, 0o600)
        subprocess.run(["mkswap", naive], check=True, capture_output=True)
        assert subprocess.run(["swapon", naive], capture_output=True, check=False).returncode != 0
        predicted = states.swapfile.present(name=naive, size=SIZE, fstab=fstab, test=True)
        assert "copy-on-write" in predicted.changes.get("file", {}).get("old", ""), (
            predicted.comment
        )
        real = states.swapfile.present(name=naive, size=SIZE, fstab=fstab)
        assert real.result is True and real.changes == predicted.changes, real.comment
        assert active_swap(naive) is not None
        assert (
            "C"
            in subprocess.run(
                ["lsattr", naive], capture_output=True, text=True, check=True
            ).stdout.split()[0]
        )
        fresh = os.path.join(mnt, "fresh")
        assert (
            modules.swapfile.ensure(fresh, "32M", fstab=fstab, reserve="0")["method"] == "fallocate"
        )
        assert active_swap(fresh) is not None


def test_xfs_takes_a_fallocated_file(modules, swap_dir, fstab):
    with loop_fs(swap_dir, "xfs", 320) as mnt:
        path = os.path.join(mnt, "swapfile")
        assert (
            modules.swapfile.ensure(path, SIZE, fstab=fstab, reserve="0")["method"] == "fallocate"
        )
        assert active_swap(path) is not None


def test_not_enough_disk_is_refused_and_nothing_is_left(states, modules, swap_dir, fstab):
    with loop_fs(swap_dir, "ext4", 64) as mnt:
        path = os.path.join(mnt, "swapfile")
        before = snapshot(mnt, fstab)
        errors = problems(modules.swapfile.preflight, path, SIZE)
        assert any("size 64M: not enough disk space for it" in e and path in e for e in errors), (
            errors
        )
        for test in (True, False):
            ret = states.swapfile.present(name=path, size=SIZE, fstab=fstab, test=test)
            assert ret.result is False and "not enough disk space" in ret.comment, ret.comment
        assert snapshot(mnt, fstab) == before
        assert sorted(os.listdir(mnt)) == ["lost+found"]


@pytest.mark.parametrize(
    "size, expected",
    [
        ("2X", "size '2X' is not a size such as 2G or 512M"),
        ("0", "size '0' is too small"),
        ("512K", "size '512K' is too small"),
        ("999T", "size 999T: not enough disk space for it"),
    ],
)
def test_bad_sizes_are_named(modules, states, swap_dir, size, expected):
    path = os.path.join(swap_dir, "swap-bad")
    errors = problems(modules.swapfile.preflight, path, size)
    assert any(expected in e for e in errors), errors
    # plan: a size that is no size is a bad argument; one that does not fit is a refusal
    kind = CommandExecutionError if size == "999T" else SaltInvocationError
    with pytest.raises(kind, match=expected):
        modules.swapfile.plan(path, size)
    for test in (True, False):
        ret = states.swapfile.present(name=path, size=size, test=test)
        assert (ret.result, ret.changes) == (False, {}) and expected in ret.comment, ret.comment
        assert "Additional info" not in ret.comment
    assert os.listdir(swap_dir) == []


def test_bad_paths_are_named(modules, swap_dir):
    missing = os.path.join(swap_dir, "missing-dir", "swapfile")
    errors = problems(modules.swapfile.preflight, missing, SIZE)
    assert any(missing in e and "does not exist" in e for e in errors), errors
    errors = problems(modules.swapfile.preflight, swap_dir, SIZE)
    assert any("not a regular file" in e for e in errors), errors
    assert modules.swapfile.preflight(os.path.join(swap_dir, "swap-ok"), SIZE) is True
    if os.path.ismount("/dev/shm"):
        errors = problems(modules.swapfile.preflight, "/dev/shm/serverfix-swap-test", SIZE)
        assert any("tmpfs" in e and "ext4" in e for e in errors), errors


def _salt_call_without_sys_admin(minion_opts, *args, fails=False):
    """salt-call with CAP_SYS_ADMIN dropped from the bounding set: swapon/swapoff say EPERM,
    as in a container without it (or under systemd-nspawn's seccomp filter). ``fails``: the function
    raises, and salt-call prints its message to stderr (returned)."""
    salt_call = os.path.join(os.path.dirname(sys.executable), "salt-call")
    argv = [
        "setpriv",
        "--bounding-set=-sys_admin",
        salt_call,
        "-c",
        os.path.dirname(minion_opts["conf_file"]),
        "--local",
        "--out=json",
        "--log-level=quiet",
        *args,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if fails:
        assert out.returncode != 0, out.stdout
        return out.stderr
    assert out.stdout, out.stderr
    return json.loads(out.stdout)["local"]


def test_swap_not_permitted_is_a_clear_error(minion_opts, swap_dir, fstab):
    path = os.path.join(swap_dir, "swap-eperm")
    before = snapshot(swap_dir, fstab)
    error = _salt_call_without_sys_admin(minion_opts, "swapfile.preflight", path, SIZE, fails=True)
    assert "not permitted" in error and "EPERM" in error and path in error, error
    for test, says in ((True, "The real run would fail"), (False, "Nothing was changed")):
        ret = _salt_call_without_sys_admin(
            minion_opts,
            "state.single",
            "swapfile.present",
            path,
            f"size={SIZE}",
            f"fstab={fstab}",
            f"test={test}",
        )
        (result,) = ret.values()
        assert result["result"] is False and "not permitted here (EPERM)" in result["comment"], (
            result
        )
        assert says in result["comment"] and result["changes"] == {}
    assert snapshot(swap_dir, fstab) == before


def _fill_swap_areas(swap_dir):
    """Tiny swap files swapped on until the kernel refuses (its cap on swap areas, ~30)."""
    for number in range(64):
        path = os.path.join(swap_dir, f"filler-{number}")
        with open(path, "wb") as handle:
            handle.write(b"\0" * (64 << 10))
        os.chmod(path, 0o600)
        subprocess.run(["mkswap", path], check=True, capture_output=True)
        if subprocess.run(["swapon", path], check=False, capture_output=True).returncode:
            os.unlink(path)
            return number
    raise AssertionError("the kernel took 64 swap areas: no cap to reach")


def test_the_kernels_limit_of_swap_areas_is_named(states, swap_dir, fstab):
    _fill_swap_areas(swap_dir)  # swap_dir's teardown swaps them off again
    path = os.path.join(swap_dir, "swap-over-the-limit")
    with open(fstab, "rb") as handle:
        fstab_before = handle.read()
    ret = _present(states, path, fstab, test=False)
    assert ret.result is False and "limit of swap areas is reached" in ret.comment, ret.comment
    assert "swapon --show" in ret.comment
    assert not os.path.exists(path) and _read_bytes(fstab) == fstab_before


# ------------------------------------------------------------ fstab bytes (issue 12, items 5 and 8)

LATIN1_FSTAB = (
    b"# Partition f\xfcr Daten (Latin-1, not UTF-8)\nUUID=abcd / ext4 errors=remount-ro 0 1\n"
)


def _write_bytes(path, data):
    with open(path, "wb") as handle:
        handle.write(data)


def _read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_fstab_with_bytes_that_are_not_utf8_is_kept_and_persisted(states, swap_dir, fstab):
    path = os.path.join(swap_dir, "swap-latin1")
    _write_bytes(fstab, LATIN1_FSTAB)
    predicted = _present(states, path, fstab, test=True)
    assert predicted.result is None, predicted.comment
    assert predicted.changes["fstab"] == {"old": [], "new": [f"{path} none swap sw 0 0"]}
    real = _present(states, path, fstab, test=False)
    assert real.result is True, real.comment
    assert real.changes == predicted.changes
    assert _read_bytes(fstab) == LATIN1_FSTAB + f"{path} none swap sw 0 0\n".encode()
    for test in (True, False):
        again = _present(states, path, fstab, test=test)
        assert again.result is True and again.changes == {}, again.comment
    removed = states.swapfile.absent(name=path, fstab=fstab)
    assert removed.result is True, removed.comment
    assert _read_bytes(fstab) == LATIN1_FSTAB


def test_fstab_that_cannot_be_read_is_refused_before_anything_changes(states, swap_dir, fstab):
    # a directory where fstab should be: reading it fails, so the plan refuses (no swap file made)
    path = os.path.join(swap_dir, "swap-unreadable")
    os.unlink(fstab)
    os.mkdir(fstab)
    before = snapshot(swap_dir)
    for test in (True, False):
        ret = _present(states, path, fstab, test=test)
        assert ret.result is False and ret.changes == {}, ret.comment
        assert fstab in ret.comment and "Traceback" not in ret.comment, ret.comment
    assert snapshot(swap_dir) == before and active_swap(path) is None


NOAUTO_CASES = {
    # fstab before, and after: only the one line for the swap file differs (its ending stays)
    "crlf": (
        b"# fstab\r\nUUID=abcd / ext4 defaults 0 1\r\n{p} none swap noauto 0 0\r\n",
        b"# fstab\r\nUUID=abcd / ext4 defaults 0 1\r\n{p} none swap sw 0 0\r\n",
    ),
    "form-feed-and-other-separators": (
        b"# page\x0cbreak \x0b\x1c\x1d\x1e \xc2\x85 \xe2\x80\xa8 \xe2\x80\xa9\n"
        b"{p} none swap sw,noauto,pri=5 0 0\nUUID=abcd / ext4 defaults 0 1\n",
        b"# page\x0cbreak \x0b\x1c\x1d\x1e \xc2\x85 \xe2\x80\xa8 \xe2\x80\xa9\n"
        b"{p} none swap sw 0 0\nUUID=abcd / ext4 defaults 0 1\n",
    ),
    "no-final-newline": (
        b"UUID=abcd / ext4 defaults 0 1\n{p} none swap defaults,noauto 0 0",
        b"UUID=abcd / ext4 defaults 0 1\n{p} none swap sw 0 0",
    ),
    "tabs": (
        b"UUID=abcd\t/\text4\tdefaults\t0\t1\n{p}\tnone\tswap\tnoauto\t0\t0\n",
        b"UUID=abcd\t/\text4\tdefaults\t0\t1\n{p} none swap sw 0 0\n",
    ),
    "other-swaps-by-uuid-and-label": (
        b"UUID=1234-5678 none swap noauto 0 0\nLABEL=spare none swap sw 0 0\n"
        b"{p} none swap noauto 0 0\n# f\xfcr Latin-1\n",
        b"UUID=1234-5678 none swap noauto 0 0\nLABEL=spare none swap sw 0 0\n"
        b"{p} none swap sw 0 0\n# f\xfcr Latin-1\n",
    ),
}


def _escaped(path):
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").encode()


@pytest.mark.parametrize("case", sorted(NOAUTO_CASES))
@pytest.mark.parametrize("name", ["swap-noauto", "swap with spaces"])
def test_noauto_line_is_replaced_and_every_other_byte_kept(states, swap_dir, fstab, case, name):
    path = os.path.join(swap_dir, name)
    before, after = (data.replace(b"{p}", _escaped(path)) for data in NOAUTO_CASES[case])
    _write_bytes(fstab, before)
    ours = [line for line in before.split(b"\n") if line.startswith(_escaped(path))]
    predicted = _present(states, path, fstab, test=True)
    assert predicted.result is None, predicted.comment
    assert predicted.changes["fstab"] == {
        "old": [ours[0].rstrip(b"\r").decode("utf-8", "backslashreplace")],
        "new": [f"{_escaped(path).decode()} none swap sw 0 0"],
    }
    assert "noauto" in predicted.comment, predicted.comment
    assert _read_bytes(fstab) == before
    real = _present(states, path, fstab, test=False)
    assert real.result is True and real.changes == predicted.changes, real.comment
    assert _read_bytes(fstab) == after
    assert _present(states, path, fstab, test=True).changes == {}


def test_duplicate_lines_keep_the_one_that_swaps_on_at_boot(states, swap_dir, fstab):
    path = os.path.join(swap_dir, "swap-dup-noauto")
    before = (
        f"# c\x0cd\r\n{path} none swap noauto 0 0\r\n{path} none swap sw,pri=3 0 0\r\n# end"
    ).encode()
    _write_bytes(fstab, before)
    predicted = _present(states, path, fstab, test=True)
    assert predicted.changes["fstab"] == {
        "old": [f"{path} none swap noauto 0 0", f"{path} none swap sw,pri=3 0 0"],
        "new": [f"{path} none swap sw,pri=3 0 0"],
    }
    real = _present(states, path, fstab, test=False)
    assert real.result is True and real.changes == predicted.changes, real.comment
    assert _read_bytes(fstab) == f"# c\x0cd\r\n{path} none swap sw,pri=3 0 0\r\n# end".encode()


def test_a_killed_runs_temp_file_counts_as_free_space(states, modules, swap_dir, fstab):
    # a run killed while writing the new file leaves .<name>.serverfix-new behind, filling the disk
    with loop_fs(swap_dir, "ext4", 100) as mnt:
        path = os.path.join(mnt, "swapfile")
        tmp = os.path.join(mnt, ".swapfile.serverfix-new")
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        reserve = free - SIZE_BYTES - (4 << 20)  # the file fits, with 4M to spare
        half = free - (8 << 20)  # the half-made file leaves too little room without it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.posix_fallocate(fd, 0, half)
        os.close(fd)
        predicted = modules.swapfile.plan(path, SIZE, fstab=fstab, reserve=str(reserve))
        assert predicted["action"] == "create"
        assert predicted["changes"]["leftover"]["old"].startswith(tmp + " (")
        done = modules.swapfile.ensure(path, SIZE, fstab=fstab, reserve=str(reserve))
        assert done["changes"] == predicted["changes"]
        assert active_swap(path) is not None and not os.path.exists(tmp)
        modules.swapfile.remove(path, fstab=fstab)
        # not ours (a directory, a symlink): refused by name, left alone
        os.mkdir(tmp)
        errors = problems(modules.swapfile.plan, path, SIZE, fstab=fstab, reserve="0")
        assert any(tmp in e and "move it away" in e for e in errors), errors
        assert os.path.isdir(tmp)
        os.rmdir(tmp)


def test_the_fstab_backup_goes_below_the_backup_dir(states, tmp_path):
    """No swap call: the swap file is gone already, only its fstab line is left to remove."""
    fstab = tmp_path / "etc" / "fstab"
    fstab.parent.mkdir()
    path = str(tmp_path / "gone.swap")
    old = FSTAB_BEFORE + f"{path} none swap sw 0 0\n"
    fstab.write_text(old, encoding="utf-8")
    backup_dir = tmp_path / "backups"
    where = f"{backup_dir}{fstab.parent}/"
    preview = states.swapfile.absent(
        name=path, fstab=str(fstab), backup_dir=str(backup_dir), test=True
    )
    assert preview.result is None and f"backed up in {where} first" in preview.comment
    assert not backup_dir.exists()
    ret = states.swapfile.absent(name=path, fstab=str(fstab), backup_dir=str(backup_dir))
    assert ret.result is True and f"was backed up in {where} first" in ret.comment, ret.comment
    [backup] = (backup_dir / str(fstab.parent).lstrip("/")).glob("fstab.serverfix-*.bak")
    assert backup.read_text(encoding="utf-8") == old and fstab.read_text() == FSTAB_BEFORE
    assert not list(fstab.parent.glob("*.bak"))
