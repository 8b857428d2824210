"""
sysctl_persist's pure parts on files in temp directories (no loader, no kernel): systemd-sysctl's
precedence (:func:`_boot_order`, the one function every caller uses, and the warnings of
:func:`overrides` built on it) as a table of cases, and bytes that are not UTF-8 in any sysctl
file. The shared parsing tests are in test_swapfile.py; the real-kernel ones in
tests/functional/modules/test_sysctl_persist.py.
"""

import json
import os

import pytest

from tests.support.loader import import_salt_module
from tests.support.paths import MODULES_DIR

sysctl = import_salt_module(MODULES_DIR / "sysctl_persist.py", "serverfix_unit_sysctl_order")

ETC, RUN, LOCAL, USR = "etc", "run", "local", "usr"
OURS = "99-zz-serverfix.conf"
WANT = {"vm.swappiness": "10"}


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        # a name in an earlier directory masks the same name in every later one
        ([(ETC, ["a.conf"]), (USR, ["a.conf"])], ["etc/a.conf"]),
        ([(RUN, ["a.conf"]), (LOCAL, ["a.conf"]), (USR, ["a.conf"])], ["run/a.conf"]),
        ([(ETC, []), (RUN, ["a.conf"]), (USR, ["a.conf"])], ["run/a.conf"]),
        # then every surviving file in name order, whatever its directory
        (
            [(ETC, ["50-b.conf"]), (USR, ["10-a.conf", "99-c.conf"])],
            ["usr/10-a.conf", "etc/50-b.conf", "usr/99-c.conf"],
        ),
        # only *.conf; bytewise order (uppercase before lowercase, "-" before digits)
        (
            [(ETC, ["README", "x.conf.bak", "b.conf", "B.conf", "a-1.conf", "a1.conf"])],
            ["etc/B.conf", "etc/a-1.conf", "etc/a1.conf", "etc/b.conf"],
        ),
        # Debian: /etc/sysctl.conf is read as 99-sysctl.conf; Salt's 99-salt.conf loses to it
        (
            [(ETC, ["99-sysctl.conf", OURS]), (USR, ["99-salt.conf", "99-sysctl.conf"])],
            ["usr/99-salt.conf", "etc/99-sysctl.conf", f"etc/{OURS}"],
        ),
    ],
)
def test_boot_order_table(listing, expected):
    assert sysctl._boot_order(listing) == expected


def _layout(tmp_path, files):
    """The four directories under ``tmp_path``; ``files``: ``{"dir/name": content}``."""
    dirs = [str(tmp_path / d) for d in (ETC, RUN, LOCAL, USR)]
    for directory in dirs:
        os.makedirs(directory)
    for rel, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        (tmp_path / rel).write_bytes(data)
    return dirs


SET_OTHER = "vm.swappiness = 60\n"
SET_OURS = "vm.swappiness = 10\n"

# (case, files, where our file goes, the warnings expected: substrings, one list per warning)
PRECEDENCE = [
    ("nothing else", {}, f"etc/{OURS}", []),
    # /etc wins: the same name in a later directory is masked by ours, never "takes precedence"
    ("same name in usr", {f"usr/{OURS}": SET_OTHER}, f"etc/{OURS}", []),
    ("same name in run", {f"run/{OURS}": SET_OTHER}, f"etc/{OURS}", []),
    ("same name in local", {f"local/{OURS}": SET_OTHER}, f"etc/{OURS}", []),
    # ours in a later directory is masked by the same name in an earlier one
    (
        "ours in run, same name in etc",
        {f"etc/{OURS}": ""},
        f"run/{OURS}",
        [[f"etc/{OURS} has the same name", "would not be read at all"]],
    ),
    (
        "ours in usr, same name in run",
        {f"run/{OURS}": SET_OURS},
        f"usr/{OURS}",
        [[f"run/{OURS} has the same name", "would not be read at all"]],
    ),
    # a file that sorts after ours sets the key differently, from any directory
    (
        "later name in usr",
        {"usr/99-zzz.conf": SET_OTHER},
        f"etc/{OURS}",
        [["usr/99-zzz.conf sets vm.swappiness = 60", "systemd-sysctl"]],
    ),
    (
        "later name in etc",
        {"etc/99-zzz.conf": SET_OTHER},
        f"etc/{OURS}",
        [["etc/99-zzz.conf sets vm.swappiness = 60"]],
    ),
    # one that sorts before ours is overridden by ours
    (
        "earlier name",
        {"etc/10-a.conf": SET_OTHER, "usr/99-sysctl.conf": SET_OTHER},
        f"etc/{OURS}",
        [],
    ),
    # a later file masked by an earlier same-named one does not count, the masking one does
    (
        "later name masked",
        {"etc/99-zzz.conf": SET_OURS, "usr/99-zzz.conf": SET_OTHER},
        f"etc/{OURS}",
        [],
    ),
    (
        "later name masking",
        {"run/99-zzz.conf": SET_OTHER, "usr/99-zzz.conf": SET_OURS},
        f"etc/{OURS}",
        [["run/99-zzz.conf sets vm.swappiness = 60"]],
    ),
    # only the last setter decides
    (
        "last setter is ours",
        {"etc/99-zzy.conf": SET_OTHER, "usr/99-zzz.conf": SET_OURS},
        f"etc/{OURS}",
        [],
    ),
    (
        "last setter differs",
        {"etc/99-zzy.conf": SET_OURS, "usr/99-zzz.conf": SET_OTHER},
        f"etc/{OURS}",
        [["usr/99-zzz.conf sets vm.swappiness = 60"]],
    ),
    ("same value later", {"usr/99-zzz.conf": "vm/swappiness=10\n"}, f"etc/{OURS}", []),
    # never read at all
    ("not a .conf name", {}, "etc/99-zz-serverfix", [["is not read at boot", "*.conf"]]),
    ("not in a sysctl.d directory", {}, f"elsewhere/{OURS}", [["is not read at boot"]]),
]


@pytest.mark.parametrize(
    ("case", "files", "where", "expected"), PRECEDENCE, ids=[c[0] for c in PRECEDENCE]
)
def test_override_warnings_follow_systemd_sysctl(tmp_path, case, files, where, expected):
    dirs = _layout(tmp_path, files)
    (tmp_path / "elsewhere").mkdir()
    warnings = sysctl.overrides(str(tmp_path / where), WANT, dirs, sysctl_conf=None)
    assert len(warnings) == len(expected), (case, warnings)
    for warning, parts in zip(warnings, expected, strict=True):
        assert all(part in warning for part in parts), (case, warning)


def test_sysctl_conf_is_applied_last_by_procps(tmp_path):
    dirs = _layout(tmp_path, {})
    conf = tmp_path / "sysctl.conf"
    conf.write_bytes(b"vm.swappiness = 33\n")
    (warning,) = sysctl.overrides(str(tmp_path / ETC / OURS), WANT, dirs, sysctl_conf=str(conf))
    assert "vm.swappiness = 33" in warning and "sysctl --system" in warning


LATIN1 = b"# r\xe9glages du noyau (Latin-1)\n"


def test_bytes_that_are_not_utf8_never_crash_and_print_safely(tmp_path):
    dirs = _layout(
        tmp_path,
        {
            "etc/99-sysctl.conf": LATIN1 + b"vm.swappiness = 10\n",
            "usr/99-zzz.conf": LATIN1 + b"vm.swappiness = 6\xe90\n",
            "etc/\xe9t\xe9.conf".encode().decode(): LATIN1,
        },
    )
    conf = tmp_path / "sysctl.conf"
    conf.write_bytes(LATIN1 + b"vm.swappiness=\xff\n")
    warnings = sysctl.overrides(str(tmp_path / ETC / OURS), WANT, dirs, sysctl_conf=str(conf))
    assert len(warnings) == 2, warnings
    assert "6\\xe90" in warnings[0] and "\\xff" in warnings[1]
    json.dumps(warnings).encode("utf-8")  # no lone surrogates: serializable for Salt's output
    assert sysctl._parse_conf(LATIN1 + b"vm.swappiness = 5\n") == {"vm.swappiness": "5"}


def test_lines_split_at_newline_only():
    text = "vm.a = 1\x0cvm.b = 2\nvm.c = 3\u2028vm.d = 4\x85\r\nvm.e=5\x1c"
    assert sysctl._parse_conf(text) == {
        "vm.a": "1 vm.b = 2",  # a form feed is a blank inside a line, as in the tools
        "vm.c": "3\u2028vm.d = 4\x85",
        "vm.e": "5\x1c",
    }


def test_managed_file_keeps_unknown_bytes_byte_for_byte():
    wanted = {"vm.swappiness": "10", "vm.vfs_cache_pressure": "50"}
    fresh = sysctl._content(wanted, None)
    assert fresh == sysctl._render(wanted).encode() and fresh.startswith(sysctl.MARKER)
    assert sysctl._content(wanted, fresh) == fresh  # idempotent
    edited = (
        fresh.replace(
            b"vm.swappiness = 10\n", b"# admin: r\xe9duit\r\nvm.swappiness=10\r\n"
        ).replace(b"vm.vfs_cache_pressure = 50\n", b"vm.vfs_cache_pressure = 100\n")
        + b"kernel.panic = 1\nvm.swappiness = 10\n; fin \xff"
    )
    out = sysctl._content(wanted, edited)
    assert out == (
        fresh.replace(b"vm.swappiness = 10\n", b"# admin: r\xe9duit\r\nvm.swappiness=10\r\n")
        + b"; fin \xff\n"
    )
    assert sysctl._content(wanted, out) == out
    # a file that is not ours is never merged (plan refuses it; this is only the rendering)
    assert sysctl._content(wanted, b"vm.swappiness = 1\n") == fresh
