"""
Faults the preflight must refuse before anything changes (one replica for all: each case proves
with a snapshot that nothing changed, so the next starts clean): pm2 missing, a disk too small for
the swap file, the .env immutable or on a read-only mount, and a bad pillar value of each kind.
"""

import json
import secrets

from tests.support.replica import ENV_FILE, run_command
from tools.proof.faults import Fault

# pillar values of each kind of rule (serverfix.PILLAR_SCHEMA), with what the error must name
PILLAR_CASES = [
    # (id, pillar (merged over the lab's), words the error must contain, in the CI subset)
    (
        "typo in a key",
        {"redis": {"pasword": "x"}},
        ["serverfix:redis:pasword", "did you mean 'password'"],
        True,
    ),
    (
        "unknown section",
        {"swapp": {"size": "2G"}},
        ["serverfix:swapp", "did you mean 'swap'"],
        False,
    ),
    (
        "not true/false",
        {"backend": {"restart": "yes"}},
        ["serverfix:backend:restart", "true or false"],
        True,
    ),
    (
        "integer out of range",
        {"redis": {"port": 70000}},
        ["serverfix:redis:port", "1 to 65535"],
        False,
    ),
    (
        "size without unit sense",
        {"swap": {"size": "2 gigabytes"}},
        ["serverfix:swap:size", "2G"],
        False,
    ),
    (
        "not one of the choices",
        {"redis": {"maxmemory_policy": "lru"}},
        ["serverfix:redis:maxmemory_policy", "noeviction"],
        False,
    ),
    (
        "relative path",
        {"dotenv": {"file": "backend/.env"}},
        ["serverfix:dotenv:file", "absolute path"],
        False,
    ),
    (
        "bad list item",
        {"remove_processes": ["all"]},
        ["serverfix:remove_processes", "not 'all'"],
        False,
    ),
    (
        "string for a list",
        {"redis": {"bind": "127.0.0.1"}},
        ["serverfix:redis:bind", "list"],
        False,
    ),
    ("string for a section", {"swap": "2G"}, ["serverfix:swap", "mapping"], False),
    (
        "extra key clashes",
        {"dotenv": {"extra": {"REDIS_HOST": "10.0.0.5"}}},
        ["serverfix:dotenv:extra", "REDIS_HOST"],
        False,
    ),
    (
        "invalid secret (masked)",
        {"redis": {"password": "has space"}},
        ["serverfix:redis:password", "<secret>"],
        True,
    ),
    ("file mode", {"dotenv": {"mode": "rw-r-----"}}, ["serverfix:dotenv:mode", "octal"], False),
    (
        "sysctl file outside sysctl.d",
        {"swap": {"sysctl_file": "/etc/sysctl.conf"}},
        ["serverfix:swap:sysctl_file", "/etc/sysctl.d/"],
        False,
    ),
    (
        "Redis host not in the bind",
        {"redis": {"host": "::1", "bind": ["127.0.0.1"]}},
        ["serverfix:redis:host", "::1"],
        True,
    ),
    ("pm2 user missing", {"pm2": {"user": "deploy"}}, ["deploy"], False),
    ("whole pillar not a mapping", "oops", ["serverfix", "mapping"], False),
]


def pillar_cases(lab):
    """The PILLAR_CASES of the lab's mode (all, or the CI subset)."""
    wanted = lab.opts["pillar_cases"]
    return [case for case in PILLAR_CASES if wanted == "all" or case[3]]


def faults_refused_in_preflight(lab):
    """Faults the preflight must refuse before anything changes. They share one replica: each
    proves (snapshot) that nothing changed, so the next one starts from a clean replica too."""
    lab.fresh("faults refused in preflight")
    replica, entries = lab.replica, []
    rootfs_env = replica.rootfs / ENV_FILE.lstrip("/")
    ssh = lab.salt("refused")

    def one(fid, title, expect, setup=None, undo=None, pillar=None, extra_secrets=()):
        fault = Fault(lab, fid, title)
        fault.before()
        lab.say(f"[fault] {fid}: {title}")
        if setup:
            setup()
        ssh.set_pillar(lab.merged(pillar), extra_secrets)
        try:
            result = lab.apply(ssh)
        finally:
            if undo:
                undo()
        fault.ran(result, expect)
        if extra_secrets:
            fault.check(
                "the bad value is not shown",
                not any(s in t for s in extra_secrets for t in ssh.transcript),
            )
        after = fault.nothing_changed()
        fault.nothing_lost(after)
        entries.append(fault.done("refused in preflight, nothing changed"))

    one(
        "pm2 missing",
        "pm2 is not on the host (its command removed)",
        ["pm2", "serverfix:pm2:bin"],
        setup=lambda: replica.ssh("mv /usr/local/bin/pm2 /usr/local/bin/.pm2-hidden"),
        undo=lambda: replica.ssh("mv /usr/local/bin/.pm2-hidden /usr/local/bin/pm2"),
    )

    def fill_disk():
        free = int(replica.ssh("df -B1 --output=avail / | tail -1").stdout)
        replica.ssh(f"fallocate -l {max(free - (1 << 30), 1 << 20)} /var/tmp/proof-filler")

    one(
        "disk too small",
        "less free space than the 2G swap file needs (a filler file leaves 1 GiB)",
        ["/swapfile", "free"],
        setup=fill_disk,
        undo=lambda: replica.ssh("rm -f /var/tmp/proof-filler"),
    )

    one(
        ".env immutable",
        ".env with the immutable attribute (chattr +i)",
        [ENV_FILE, "not writable"],
        setup=lambda: run_command(["chattr", "+i", str(rootfs_env)], timeout=30),
        undo=lambda: run_command(["chattr", "-i", str(rootfs_env)], timeout=30),
    )

    bind = f"mount --bind {ENV_FILE} {ENV_FILE} && mount -o remount,bind,ro {ENV_FILE}"
    if (
        lab.opts["ro_mount"]
        and replica.ssh(f"{bind} && umount {ENV_FILE}", check=False, timeout=30).returncode == 0
    ):
        one(
            ".env read-only mount",
            ".env on a read-only bind mount",
            [ENV_FILE, "not writable"],
            setup=lambda: replica.ssh(bind),
            undo=lambda: replica.ssh(f"umount {ENV_FILE}"),
        )

    for title, pillar, expect, _ in pillar_cases(lab):
        secret = ()
        if title.startswith("invalid secret"):
            pillar = {"redis": {"password": "has space " + secrets.token_hex(8)}}
            secret = (pillar["redis"]["password"],)
        one(
            "bad pillar: " + title,
            f"pillar {json.dumps(pillar)}" if not secret else "pillar redis:password with a space",
            expect,
            pillar=pillar,
            extra_secrets=secret,
        )
    return entries
