"""
The swap and sysctl pure parts (no loader, no kernel): /proc/swaps, fstab and mountinfo parsing
(_utils/serverfix_fstab.py), the create/resize/rebuild/activate decision table
(_utils/serverfix_swapplan.py), the error contract helpers, and the sysctl.d boot order.
The real-kernel behaviour is covered in tests/functional/modules/test_swapfile.py and
test_sysctl_persist.py.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.loader import import_salt_module
from tests.support.paths import MODULES_DIR, UTILS_DIR

sysctl_persist = import_salt_module(
    MODULES_DIR / "sysctl_persist.py", "serverfix_unit_sysctl_persist"
)
serverfix_files = import_salt_module(UTILS_DIR / "serverfix_files.py", "serverfix_unit_files_util")
fstab_util = import_salt_module(UTILS_DIR / "serverfix_fstab.py", "serverfix_unit_fstab_util")
swapplan = import_salt_module(UTILS_DIR / "serverfix_swapplan.py", "serverfix_unit_swapplan_util")

M = 1 << 20
PROC_SWAPS = """Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/swapfile                               file\t\t2097148\t\t1024\t\t-2
/var/tmp/my\\040swap                     file\t\t65532\t\t0\t\t-3
/old (deleted)                          file\t\t65532\t\t0\t\t-4
/dev/vdb2                               partition\t1048572\t\t0\t\t-5
"""


def test_proc_swaps_parsed_with_escapes_and_deleted_files():
    entries = fstab_util.parse_proc_swaps(PROC_SWAPS)
    assert [e["filename"] for e in entries] == [
        "/swapfile",
        "/var/tmp/my swap",
        "/old",
        "/dev/vdb2",
    ]
    assert entries[0] == {
        "filename": "/swapfile",
        "type": "file",
        "size_bytes": 2097148 * 1024,
        "used_bytes": 1024 * 1024,
        "priority": -2,
        "deleted": False,
    }
    assert entries[2]["deleted"] and entries[3]["type"] == "partition"
    assert fstab_util.parse_proc_swaps("Filename\tType\tSize\tUsed\tPriority\n") == []


def test_meminfo_parsed_in_bytes(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text(
        "MemTotal:        3800000 kB\nMemAvailable:    1200000 kB\nHugePages_Total:  0\n",
        encoding="ascii",
    )
    info = serverfix_files.meminfo(str(path))
    assert info == {
        "MemTotal": 3800000 * 1024,
        "MemAvailable": 1200000 * 1024,
        "HugePages_Total": 0,
    }
    assert serverfix_files.meminfo(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize("lines", [1, 3, 50])
def test_tail_lines_reads_only_the_end_and_long_lines_still_count(tmp_path, lines):
    path = tmp_path / "out.log"
    body = [f"line {i} " + "x" * (i % 7 * 300) for i in range(200)]
    path.write_text("\n".join(body) + "\n", encoding="utf-8")
    assert serverfix_files.tail_lines(str(path), lines) == body[-lines:]
    assert serverfix_files.tail_lines(str(tmp_path / "missing.log"), lines) == []


MOUNTINFO = """22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /tmp rw,nosuid - tmpfs tmpfs rw
31 22 0:27 / /var/lib/my\\040data rw - xfs /dev/vdb rw
40 22 0:30 / /mnt ro,relatime - btrfs /dev/vdc ro
41 40 0:31 / /mnt rw,relatime - ext2 /dev/loop0 rw
"""


@pytest.mark.parametrize(
    "path, fs_type, point",
    [
        ("/swapfile", "ext4", "/"),
        ("/tmp/x", "tmpfs", "/tmp"),
        ("/tmpfoo/x", "ext4", "/"),  # a prefix of the name is not the mount point
        ("/var/lib/my data/swap", "xfs", "/var/lib/my data"),
        ("/mnt/swap", "ext2", "/mnt"),  # stacked mounts: the last one is the visible one
    ],
)
def test_mount_of_finds_the_visible_mount(path, fs_type, point):
    mount = fstab_util.mount_of(path, MOUNTINFO)
    assert (mount["fs_type"], mount["mount_point"]) == (fs_type, point)


def test_fstab_gets_exactly_one_line():
    base = "# comment /swapfile\nUUID=1 / ext4 defaults 0 1\n"
    added = fstab_util.with_swap(base, "/swapfile")
    assert added == base + "/swapfile none swap sw 0 0\n"
    assert fstab_util.with_swap(added, "/swapfile") is None
    assert (
        fstab_util.with_swap("UUID=1 / ext4 defaults 0 1", "/swapfile")
        == "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n"
    )  # no newline at the end before
    dup = base + "/swapfile none swap sw 0 0\n/swapfile swap swap defaults 0 0\n"
    assert fstab_util.with_swap(dup, "/swapfile") == added
    wrong_type = base + "/swapfile /mnt ext4 defaults 0 0\n"
    assert fstab_util.with_swap(wrong_type, "/swapfile") == added
    own = base + "/swapfile none swap sw,pri=5 0 0\n"
    assert fstab_util.with_swap(own, "/swapfile") is None  # the admin's options stay
    assert fstab_util.with_swap("", "/my swap") == "/my\\040swap none swap sw 0 0\n"


def test_fstab_without_removes_every_line_for_the_file_only():
    text = "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n/swapfile2 none swap sw 0 0\n"
    assert (
        fstab_util.without(text, "/swapfile")
        == "UUID=1 / ext4 defaults 0 1\n/swapfile2 none swap sw 0 0\n"
    )
    assert fstab_util.without(text, "/nothere") is None


LINE = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
    ),
    max_size=40,
)
SWAP_PATH = st.from_regex(r"\A/[a-z0-9 _.-]{1,12}\Z")


@given(st.lists(LINE, max_size=8), SWAP_PATH)
def test_fstab_property_one_line_others_kept_idempotent(lines, path):
    text = "".join(line + "\n" for line in lines)
    new = fstab_util.with_swap(text, path)
    final = text if new is None else new
    assert len(fstab_util.entries(final, path)) == 1
    assert fstab_util.with_swap(final, path) is None
    others = [line for line in text.splitlines() if not fstab_util.entries(line + "\n", path)]
    assert [
        line for line in final.splitlines() if not fstab_util.entries(line + "\n", path)
    ] == others


@given(SWAP_PATH)
def test_fstab_escape_round_trips(path):
    assert fstab_util.unescape_octal(fstab_util.escape(path)) == path


def _st(**kw):
    base = {
        "path": "/swapfile",
        "exists": True,
        "is_file": True,
        "size_bytes": 64 * M,
        "allocated_bytes": 64 * M,
        "mode": 0o600,
        "uid": 0,
        "gid": 0,
        "is_swap": True,
        "header_ok": True,
        "holes": False,
        "nocow": False,
        "fs_type": "ext4",
        "mount_point": "/",
        "active": True,
        "used_bytes": 0,
    }
    base.update(kw)
    return base


PLENTY = 100 << 30


@pytest.mark.parametrize(
    "status, wanted, action, keys",
    [
        (
            _st(
                exists=False,
                is_file=False,
                is_swap=False,
                active=False,
                size_bytes=None,
                allocated_bytes=0,
            ),
            64 * M,
            "create",
            {"file", "active"},
        ),
        (_st(), 64 * M, "none", set()),
        (_st(mode=0o644), 64 * M, "none", {"mode"}),
        (_st(uid=1000), 64 * M, "none", {"mode"}),
        (_st(), 96 * M, "resize", {"file"}),
        (_st(active=False), 96 * M, "rebuild", {"file", "active"}),
        (_st(active=False), 64 * M, "activate", {"active"}),
        (_st(active=False, mode=0o644), 64 * M, "activate", {"active", "mode"}),
        (_st(active=False, holes=True), 64 * M, "rebuild", {"file", "active"}),
        (_st(active=False, fs_type="btrfs"), 64 * M, "rebuild", {"file", "active"}),
        (_st(active=False, fs_type="btrfs", nocow=True), 64 * M, "activate", {"active"}),
        (_st(active=False, header_ok=False), 64 * M, "rebuild", {"file", "active"}),
    ],
)
def test_decision_table(status, wanted, action, keys):
    result = swapplan.decide(status, wanted, PLENTY, PLENTY)
    assert (result["action"], set(result["changes"]), result["errors"]) == (action, keys, [])


def test_refusals_name_the_key_and_the_fix():
    not_swap = swapplan.decide(_st(is_swap=False, active=False), 64 * M, PLENTY, PLENTY)["errors"]
    assert "/swapfile exists and is not a swap area" in not_swap[0]
    directory = swapplan.decide(_st(is_file=False), 64 * M, PLENTY, PLENTY)["errors"]
    assert "not a regular file" in directory[0]
    # 64M + 256M reserve does not fit in 300M free
    disk = swapplan.decide(
        _st(exists=False, active=False, size_bytes=None), 64 * M, 300 * M, PLENTY
    )["errors"]
    assert (
        "size 64M: not enough disk space for it at /swapfile" in disk[0]
        and "320.0 MiB needed" in disk[0]
    )
    # growing 1G -> 2G with 1.2G free: the old file's blocks count as free (it goes first)
    grow = swapplan.decide(
        _st(size_bytes=1 << 30, allocated_bytes=1 << 30), 2 << 30, 1300 * M, PLENTY
    )
    assert grow["errors"] == []
    memory = swapplan.decide(_st(used_bytes=900 * M), 128 * M, PLENTY, 1000 * M)["errors"]
    assert "cannot resize /swapfile now: 900.0 MiB of it is in use" in memory[0]
    assert swapplan.decide(_st(used_bytes=900 * M), 128 * M, PLENTY, 1100 * M)["errors"] == []


@pytest.mark.parametrize(
    "size, text", [(2 << 30, "2G"), (512 * M, "512M"), (1536 * M, "1536M"), (4097, "4097 bytes")]
)
def test_human_sizes(size, text):
    assert swapplan.human(size) == text


def test_sysctl_boot_order_first_directory_wins_then_names_sort():
    order = sysctl_persist._boot_order(
        [
            (
                "/etc/sysctl.d",
                ["99-sysctl.conf", "99-zz-serverfix.conf", "50-pid-max.conf", "README.sysctl"],
            ),
            ("/run/sysctl.d", []),
            (
                "/usr/lib/sysctl.d",
                ["50-pid-max.conf", "99-salt.conf", "99-zzz-late.conf", "10-a.conf"],
            ),
        ]
    )
    assert order == [
        "/usr/lib/sysctl.d/10-a.conf",
        "/etc/sysctl.d/50-pid-max.conf",
        "/usr/lib/sysctl.d/99-salt.conf",
        "/etc/sysctl.d/99-sysctl.conf",
        "/etc/sysctl.d/99-zz-serverfix.conf",
        "/usr/lib/sysctl.d/99-zzz-late.conf",
    ]
    # Salt's sysctl.present file loses to /etc/sysctl.conf; this formula's file wins
    assert order.index("/usr/lib/sysctl.d/99-salt.conf") < order.index(
        "/etc/sysctl.d/99-sysctl.conf"
    )


def test_sysctl_conf_parsing_like_the_tools():
    text = (
        "# comment\n; also a comment\nvm.swappiness=60\n vm/vfs_cache_pressure = 100 \n"
        "-net.ipv4.tcp_rmem = 4096\t87380  6291456\nvm.swappiness = 5\nnot a setting\n"
    )
    assert sysctl_persist._parse_conf(text) == {
        "vm.swappiness": "5",
        "vm.vfs_cache_pressure": "100",
        "net.ipv4.tcp_rmem": "4096 87380 6291456",
    }
    assert sysctl_persist._render({"vm.vfs_cache_pressure": 50, "vm.swappiness": 10}).endswith(
        "vm.swappiness = 10\nvm.vfs_cache_pressure = 50\n"
    )


def test_remove_refusals_and_changes():
    gone = swapplan.decide_remove(
        _st(exists=False, is_file=False, active=False, fstab_lines=[]), PLENTY
    )
    assert gone == ({}, [])
    changes, errors = swapplan.decide_remove(
        _st(fstab_lines=["/swapfile none swap sw 0 0"]), PLENTY
    )
    assert set(changes) == {"active", "fstab", "file"} and errors == []
    _, errors = swapplan.decide_remove(_st(used_bytes=900 * M, fstab_lines=[]), 1000 * M)
    assert "cannot swap off /swapfile: 900.0 MiB of it is in use" in errors[0]
    _, errors = swapplan.decide_remove(_st(is_swap=False, active=False, fstab_lines=[]), PLENTY)
    assert "not a swap area" in errors[0] and "may hold data" in errors[0]


def test_error_helpers_raise_one_error_listing_every_problem():
    errors_util = import_salt_module(
        UTILS_DIR / "serverfix_errors.py", "serverfix_unit_errors_util"
    )
    errors_util.raise_problems([])  # nothing to say: no error
    with pytest.raises(CommandExecutionError) as raised:
        errors_util.raise_problems(["a is wrong", "b is wrong"], prefix="Nothing was changed: ")
    assert raised.value.info == {"errors": ["a is wrong", "b is wrong"]}
    assert errors_util.message(raised.value) == "Nothing was changed: a is wrong\nb is wrong"
    assert "Additional info" in str(raised.value)  # what Salt adds; message() leaves it out
    assert errors_util.problems(raised.value) == ["a is wrong", "b is wrong"]
    assert errors_util.problems(SaltInvocationError("size 'x'")) == ["size 'x'"]


# fstab as bytes (issue 12, items 5 and 8): lines cut at \n only, every other byte kept

SEPARATORS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.mark.parametrize("sep", list(SEPARATORS))
def test_fstab_lines_are_cut_at_newline_only(sep):
    text = f"# a{sep}b\n/swapfile none swap noauto 0 0\r\nUUID=1 / ext4 defaults 0 1"
    new = fstab_util.with_swap(text, "/swapfile")
    assert new == f"# a{sep}b\n/swapfile none swap sw 0 0\r\nUUID=1 / ext4 defaults 0 1"
    assert fstab_util.without(new, "/swapfile") == f"# a{sep}b\nUUID=1 / ext4 defaults 0 1"


def test_fstab_bytes_that_are_not_utf8_round_trip():
    data = b"# f\xfcr\xff\n/swapfile none swap sw 0 0\n"
    text = fstab_util.decode(data)
    assert fstab_util.with_swap(text, "/swapfile") is None
    assert fstab_util.encode(fstab_util.without(text, "/swapfile")) == b"# f\xfcr\xff\n"
    assert fstab_util.shown(text.split("\n")[0]) == "# f\\xfcr\\xff"


@pytest.mark.parametrize(
    "options, persistent",
    [
        ("noauto", False),
        ("sw,noauto", False),
        ("defaults,noauto,pri=5", False),
        ("sw", True),
        ("defaults", True),
        ("sw,pri=5,nofail", True),
        (None, True),
    ],
)
def test_noauto_is_not_persistent(options, persistent):
    line = "/swapfile none swap" + (f" {options} 0 0" if options else "")
    new, reason = fstab_util.review(line + "\n", "/swapfile")
    if persistent:
        assert (new, reason) == (None, "")
    else:
        assert new == "/swapfile none swap sw 0 0\n" and "noauto" in reason


def test_fstab_neighbours_are_left_alone():
    others = (
        "UUID=1234 none swap noauto 0 0\nLABEL=spare none swap sw 0 0\n"
        "/swapfile2 none swap noauto 0 0\n#/swapfile none swap noauto 0 0\n"
    )
    assert fstab_util.with_swap(others + "/swapfile\tnone\tswap\tsw\t0\t0\n", "/swapfile") is None
    new = fstab_util.with_swap(others, "/swapfile")
    assert new == others + "/swapfile none swap sw 0 0\n"
    spaced = others + "/my\\040swap none swap noauto 0 0\n"
    assert fstab_util.with_swap(spaced, "/my swap") == others + "/my\\040swap none swap sw 0 0\n"
    crlf = "UUID=1 / ext4 defaults 0 1\r\n"
    assert fstab_util.with_swap(crlf, "/s") == crlf + "/s none swap sw 0 0\r\n"
    # duplicates: the line that swaps on at boot (with the admin's options) is the one kept
    dup = "/swapfile none swap noauto 0 0\n/swapfile none swap sw,pri=3 0 0\n"
    assert fstab_util.with_swap(dup, "/swapfile") == "/swapfile none swap sw,pri=3 0 0\n"


@pytest.mark.parametrize("field", ["/a\\089", "/a\\9", "/a\\", "/a\\٣٣٣"])
def test_unescape_leaves_what_is_not_an_octal_escape(field):
    assert fstab_util.unescape_octal(field) == field


BYTE_LINE = st.binary(max_size=30).filter(lambda line: b"\n" not in line)


@given(st.lists(BYTE_LINE, max_size=6), st.sampled_from([b"\n", b"\r\n", b""]))
def test_fstab_property_every_other_byte_kept(raw_lines, last_end):
    data = b"\n".join(raw_lines) + (last_end if raw_lines else b"")
    text = fstab_util.decode(data)
    new = fstab_util.with_swap(text, "/swapfile")
    final = text if new is None else new
    assert len(fstab_util.entries(final, "/swapfile")) == 1
    removed = fstab_util.encode(fstab_util.without(final, "/swapfile"))
    mine = {i for i, _, _ in fstab_util.entries(text, "/swapfile")}
    kept = [line for i, line in enumerate(data.split(b"\n")) if i not in mine]
    assert [line for line in removed.split(b"\n") if line] == [line for line in kept if line]
