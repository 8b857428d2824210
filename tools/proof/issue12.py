"""
The fault matrix of issue 12 (nothing lost, nothing leaked on servers that are not the replica):
each item that can be produced on the replica, from a clean one, checked by invariants (what must
hold whatever the fix's wording): nothing lost (data, keys, files, access), no secret in any
output. Full mode only (``python -m tools.proof --only issue12`` runs just these).

- 1: a Redis installed by hand with ``appendonly no`` and keys in ``dump.rdb``: every key survives
  the apply and a restart after it;
- 2: ``swap:sysctl_file`` naming an admin's file (Debian's ``99-sysctl.conf`` symlink, a plain file
  without the formula's marker): refused, the file byte-identical;
- 3: the ``.env`` readable by a non-root user through a POSIX ACL, with a ``user.*`` xattr: both
  kept by the edit, the user still reads it;
- 4: ``remove_processes`` naming the backend: refused, the backend online;
- 5: Latin-1 bytes in ``/etc/fstab`` and the ``.env``: the run completes, every other byte kept;
- 13: ``dotenv:extra`` secrets and a URL with credentials: in no output (salt-ssh, logs, job
  cache, thin dir, diagnose);
- 14: ``requirepass`` set by hand, pillar password ``''``: refused, auth kept, ``.env`` untouched.
"""

import json
import os
import secrets

from tests.support.replica import ENV_FILE, THIN_DIR, fixture_secrets, run_command
from tools.proof.faults import Fault, managed_values
from tools.proof.lab import backend_up, first_error, guest_file

REDIS_CONF = "/etc/redis/redis.conf"
READER = "proofreader"  # the non-root user that reads the .env through an ACL (item 3)
KEYS = 200  # string keys in the hand-made Redis (item 1), plus one list
LATIN1_FSTAB = b"# Sicherungsger\xe4t f\xfcr die Nacht (M\xfcller)"
LATIN1_ENV = b"# Zust\xe4ndig: J\xfcrgen M\xfcller"


def _completed(fault, result):
    """A run that must complete: rc 0, no failed state, no traceback anywhere in its output."""
    fault.entry["rc"] = result["rc"]
    fault.entry["error"] = first_error(result["data"], result["output"])[:600]
    fault.check("run completed (rc 0, no failed state)", _ok(result))
    fault.check("no traceback in the output", "Traceback" not in result["output"])


def _ok(result):
    return bool(result["rc"] == 0 and result["run"] and not result["run"].failed)


def _refused(fault, result):
    """A run that must be refused: rc != 0, no traceback (which state refuses is the fix's
    choice)."""
    fault.entry["rc"] = result["rc"]
    fault.entry["error"] = first_error(result["data"], result["output"])[:600]
    fault.check("run refused (rc != 0)", result["rc"] != 0)
    fault.check("no traceback in the output", "Traceback" not in result["output"])


def _secret_free(fault, lab, ssh, values):
    """``values`` in nothing this salt-ssh printed or logged (the lab's scan covers them too)."""
    lab.extra_secrets.extend(v for v in values if v not in lab.extra_secrets)
    texts = ssh.outputs()
    fault.check(
        "the secret in no salt-ssh output or log", not any(v in t for v in values for t in texts)
    )


def _redis_by_hand(lab, conf_edit=""):
    """Redis installed by hand (apt-get, outside salt), ``conf_edit`` (a sed script) applied to
    its config, restarted."""
    lab.replica.ssh(
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null && "
        "apt-get install -y -qq redis-server >/dev/null"
        + (f" && sed -i {conf_edit} {REDIS_CONF}" if conf_edit else "")
        + " && systemctl restart redis-server && "
        "for i in $(seq 50); do redis-cli ping 2>&1 | grep -q 'PONG\\|NOAUTH' && break; "
        "sleep 0.2; done",
        timeout=600,
    )


def _redis_cli(lab, command, password=None):
    """``redis-cli`` in the guest; the password travels on stdin (REDISCLI_AUTH), never in argv."""
    auth = "read -r REDISCLI_AUTH; export REDISCLI_AUTH; " if password else ""
    return lab.replica.ssh(
        f"{auth}redis-cli -h 127.0.0.1 {command} 2>&1; true",
        stdin=(password + "\n") if password else None,
        timeout=60,
    ).stdout.strip()


# --------------------------------------------------------------------------------------------------
# 1: switching a Redis with data to AOF


def item1_aof_switch_keeps_keys(lab):
    """A Redis installed by hand, ``appendonly no``, keys saved in dump.rdb: after the apply (which
    also sets the password) and after a restart of Redis, every key reads the same."""
    fault = Fault(
        lab,
        "issue12/1 Redis with data switched to AOF",
        f"Redis installed by hand, appendonly no, {KEYS} keys and a list in dump.rdb",
    )
    lab.fresh("issue12/1: Redis with data")
    _redis_by_hand(lab, "'s/^appendonly .*/appendonly no/'")
    tag = secrets.token_hex(4)
    lines = [f"SET proof:job:{i} value-{tag}-{i}" for i in range(KEYS)]
    lines += [f"RPUSH bull:proof:wait job-{tag}-{i}" for i in range(20)] + ["SAVE"]
    lab.replica.ssh("redis-cli -h 127.0.0.1 >/dev/null", stdin="\n".join(lines) + "\n", timeout=60)
    fault.check(
        "precondition: appendonly no, keys in dump.rdb",
        _redis_cli(lab, "CONFIG GET appendonly").split()[-1:] == ["no"]
        and lab.replica.ssh("test -s /var/lib/redis/dump.rdb && echo y; true").stdout.strip()
        == "y",
    )
    expected = [f"value-{tag}-{i}" for i in range(KEYS)]
    listed = [f"job-{tag}-{i}" for i in range(20)]

    def keys_there(password):
        values = _redis_cli(
            lab, "MGET " + " ".join(f"proof:job:{i}" for i in range(KEYS)), password
        )
        jobs = _redis_cli(lab, "LRANGE bull:proof:wait 0 -1", password)
        return values.splitlines() == expected and jobs.splitlines() == listed

    fault.check("precondition: every key readable", keys_there(None))
    fault.before()
    ssh = lab.salt("issue12-1-aof")
    lab.apply(ssh, "test=True")
    result = lab.apply(ssh)
    _completed(fault, result)
    fault.check(
        "appendonly yes in effect",
        _redis_cli(lab, "CONFIG GET appendonly", lab.password).split()[-1:] == ["yes"],
    )
    fault.check("every key and the list there after the apply", keys_there(lab.password))
    lab.replica.ssh("systemctl restart redis-server && sleep 1", timeout=120)
    fault.check("every key there after a restart (from the AOF)", keys_there(lab.password))
    fault.nothing_lost()
    _secret_free(fault, lab, ssh, [lab.password])
    return fault.done("handled: every key kept through the switch to AOF")


# --------------------------------------------------------------------------------------------------
# 2 and 4: refused before anything changes (one replica: a snapshot proves nothing changed)


def items2_4_refused(lab):
    """Item 2 (``swap:sysctl_file`` an admin's file: Debian's 99-sysctl.conf symlink, a plain file
    without the marker) and item 4 (``remove_processes`` naming the backend), one replica."""
    lab.fresh("issue12/2, 4: refused")
    replica, entries = lab.replica, []
    ssh = lab.salt("issue12-refused")
    replica.ssh(
        "[ -e /etc/sysctl.d/99-sysctl.conf ] || ln -s ../sysctl.conf /etc/sysctl.d/99-sysctl.conf; "
        "printf '\\n# the admin s own settings\\nkernel.panic = 10\\n' >> /etc/sysctl.conf; "
        "printf '# tuned by hand\\nvm.swappiness = 30\\n' > /etc/sysctl.d/60-admin.conf"
    )

    def one(fid, title, pillar, keep, outcome, extra=None):
        fault = Fault(lab, fid, title)
        fault.before()
        kept = {path: guest_file(replica, path) for path in keep}
        lab.say(f"[fault] {fid}: {title}")
        ssh.set_pillar(lab.merged(pillar))
        result = lab.apply(ssh)
        _refused(fault, result)
        for path, before in kept.items():
            fault.check(
                f"{path} byte-identical, still a {'symlink' if before[2] else 'file'}",
                guest_file(replica, path) == before,
            )
        after = fault.nothing_changed()
        fault.nothing_lost(after)
        if extra:
            extra(fault, after)
        entries.append(fault.done(outcome))

    one(
        "issue12/2 sysctl_file a symlink to sysctl.conf",
        "swap:sysctl_file: /etc/sysctl.d/99-sysctl.conf (Debian: a symlink to /etc/sysctl.conf)",
        {"swap": {"sysctl_file": "/etc/sysctl.d/99-sysctl.conf"}},
        ["/etc/sysctl.conf", "/etc/sysctl.d/99-sysctl.conf"],
        "refused, the admin's file untouched",
    )
    one(
        "issue12/2 sysctl_file an admin's file",
        "swap:sysctl_file: /etc/sysctl.d/60-admin.conf (written by hand, no serverfix marker)",
        {"swap": {"sysctl_file": "/etc/sysctl.d/60-admin.conf"}},
        ["/etc/sysctl.d/60-admin.conf"],
        "refused, the admin's file untouched",
    )
    one(
        "issue12/4 remove_processes names the backend",
        "remove_processes: [prisma-studio, intranet-backend]",
        {"remove_processes": ["prisma-studio", "intranet-backend"]},
        [],
        "refused, the backend kept",
        extra=lambda fault, after: fault.check(
            "both processes still listed in pm2",
            {"prisma-studio", "intranet-backend"} <= {p["name"] for p in after.get("pm2") or []},
        ),
    )
    return entries


# --------------------------------------------------------------------------------------------------
# 3: ACLs and xattrs of the .env


def item3_acl_xattr_kept(lab):
    """The .env 0600 root, readable by ``proofreader`` through a POSIX ACL, with a user.* xattr:
    after the edit the ACL and the xattr are the same and the user still reads the file."""
    fault = Fault(
        lab,
        "issue12/3 .env ACL and xattr",
        f".env 0600, readable by {READER} through an ACL; a user.* xattr",
    )
    lab.fresh("issue12/3: ACL")
    replica = lab.replica
    uid = replica.ssh(f"useradd -r -M -s /usr/sbin/nologin {READER}; id -u {READER}").stdout.strip()
    replica.ssh(f"chmod 0600 {ENV_FILE}")
    host_path = replica.rootfs / ENV_FILE.lstrip("/")
    run_command(["setfacl", "-m", f"u:{uid}:r", str(host_path)], timeout=30)
    os.setxattr(host_path, "user.proof.label", b"keep-me")

    def attrs():
        # read in the guest (what the backend's user sees), not through this host's view
        out = replica.ssh(f"python3 - {ENV_FILE}", stdin=READ_XATTRS, timeout=30).stdout
        return {name: (bytes.fromhex(v) if v else None) for name, v in json.loads(out).items()}

    def reader_reads():
        proc = replica.ssh(f"runuser -u {READER} -- cat {ENV_FILE} >/dev/null", check=False)
        return proc.returncode == 0

    before = attrs()
    fault.check("precondition: the ACL and the xattr set", all(before.values()))
    fault.check(f"precondition: {READER} reads the .env", reader_reads())
    fault.before()
    ssh = lab.salt("issue12-3-acl")
    result = lab.apply(ssh)
    _completed(fault, result)
    values = replica.dotenv_values()
    fault.check(
        "queue keys read right (npm dotenv)",
        all(values.get(k) == v for k, v in managed_values(lab).items()),
    )
    after = attrs()
    fault.check(
        "the ACL kept", after["system.posix_acl_access"] == before["system.posix_acl_access"]
    )
    fault.check("the user.* xattr kept", after["user.proof.label"] == before["user.proof.label"])
    fault.check(f"{READER} still reads the .env", reader_reads())
    fault.nothing_lost()
    _secret_free(fault, lab, ssh, [lab.password])
    return fault.done("handled: the ACL and the xattr kept")


# --------------------------------------------------------------------------------------------------
# 5: bytes that are not UTF-8


READ_XATTRS = r"""
import json, os, sys
out = {}
for name in ("system.posix_acl_access", "user.proof.label"):
    try:
        out[name] = os.getxattr(sys.argv[1], name).hex()
    except OSError:
        out[name] = None
print(json.dumps(out))
"""
INSERT_LATIN1 = r"""
import sys
path, line, at = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])
with open(path, "rb") as handle:
    lines = handle.read().split(b"\n")
lines.insert(min(at, len(lines)), line)
with open(path, "wb") as handle:
    handle.write(b"\n".join(lines))
"""


def item5_latin1_bytes_kept(lab):
    """A Latin-1 comment in /etc/fstab and in the .env: the run completes (no traceback), fstab
    gets the swap line and keeps every other byte, the .env keeps the comment byte for byte; a
    re-run completes too."""
    fault = Fault(
        lab,
        "issue12/5 Latin-1 bytes in fstab and .env",
        "a Latin-1 comment in /etc/fstab and in the .env (not UTF-8)",
    )
    lab.fresh("issue12/5: Latin-1")
    replica = lab.replica
    for path, line, at in (("/etc/fstab", LATIN1_FSTAB, 1), (ENV_FILE, LATIN1_ENV, 2)):
        replica.ssh(f"python3 - {path} {line.hex()} {at}", stdin=INSERT_LATIN1, timeout=30)
    fstab_before = guest_file(replica, "/etc/fstab")[0]
    fault.before()
    ssh = lab.salt("issue12-5-latin1")
    preview = lab.apply(ssh, "test=True")
    fault.check(
        "the preview completes without a traceback",
        preview["rc"] == 0 and "Traceback" not in preview["output"],
    )
    result = lab.apply(ssh)
    _completed(fault, result)
    fstab = guest_file(replica, "/etc/fstab")[0] or b""
    swap_lines = [ln for ln in fstab.split(b"\n") if ln.split()[:1] == [b"/swapfile"]]
    fault.check("fstab has the swap line once", len(swap_lines) == 1 and b"swap" in swap_lines[0])
    rest = b"\n".join(
        ln for ln in fstab.split(b"\n") if b"/swapfile" not in ln and b"serverfix" not in ln
    )
    fault.check(
        "every other fstab byte kept", rest.rstrip(b"\n") == (fstab_before or b"").rstrip(b"\n")
    )
    env = guest_file(replica, ENV_FILE)[0] or b""
    fault.check("the .env keeps the Latin-1 line byte for byte", LATIN1_ENV + b"\n" in env)
    values = replica.dotenv_values()
    fault.check(
        "queue keys read right (npm dotenv)",
        all(values.get(k) == v for k, v in managed_values(lab).items()),
    )
    fault.nothing_lost()
    again = lab.apply(ssh)
    fault.check(
        "a re-run completes without a traceback", _ok(again) and "Traceback" not in again["output"]
    )
    fault.entry["rerun_changes"] = len(again["run"].changed) if again["run"] else None
    fault.check("the re-run changes nothing", again["run"] and not again["run"].changed)
    return fault.done("handled: the run completes, the bytes kept")


# --------------------------------------------------------------------------------------------------
# 13: dotenv:extra values are secrets


def guest_hits(lab, values, paths):
    """Files under ``paths`` in the guest holding one of ``values``, and journal lines (the values
    travel on stdin into a 0600 pattern file, never in a command line)."""
    pattern = "/root/.proof-extra-pattern"
    lab.replica.ssh(f"umask 077; cat > {pattern}", stdin="\n".join(values) + "\n", timeout=30)
    try:
        files = lab.replica.ssh(
            f"grep -rlaF -f {pattern} {' '.join(paths)} 2>/dev/null; true", timeout=120
        ).stdout.split()
        journal = lab.replica.ssh(
            f"journalctl -q --no-pager -o cat 2>/dev/null | grep -caF -f {pattern}; true",
            timeout=120,
        ).stdout.split()
    finally:
        lab.replica.ssh(f"rm -f {pattern}", timeout=30)
    return files, int(journal[-1]) if journal else 0


def url_credentials(url):
    """The ``user:password`` part of a URL and the password alone."""
    userinfo = url.split("://", 1)[1].split("@", 1)[0]
    return [userinfo, userinfo.split(":", 1)[1]] if ":" in userinfo else [userinfo]


def item13_extra_values_secret(lab):
    """``dotenv:extra`` with SMTP_PASS, DB_PASS and a DATABASE_URL with credentials (it replaces the
    fixture's, whose old value is a secret too): preview, apply, preview, diagnose, verify; none
    of the values (new or old) in salt-ssh output, its logs or job cache, the guest's logs, journal
    or salt-ssh dir."""
    fault = Fault(
        lab,
        "issue12/13 dotenv:extra values never shown",
        "dotenv:extra SMTP_PASS, DB_PASS, DATABASE_URL=postgres://app:<pw>@host/db",
    )
    lab.fresh("issue12/13: extra secrets")
    url = f"postgres://app:sfUrl{secrets.token_hex(8)}@db.internal/app"
    extra = {
        "SMTP_PASS": "sfSmtp" + secrets.token_hex(8),
        "DB_PASS": "sfDb" + secrets.token_hex(8),
        "DATABASE_URL": url,
    }
    values = [extra["SMTP_PASS"], extra["DB_PASS"], url, *url_credentials(url), *fixture_secrets()]
    fault.before()
    ssh = lab.salt("issue12-13-extra", pillar={"dotenv": {"extra": extra}}, extra_secrets=values)
    outputs = {}
    for key, args in (
        ("preview", ("test=True",)),
        ("apply", ()),
        ("preview after", ("test=True",)),
        ("diagnose", ("serverfix.diagnose",)),
        ("verify", ("serverfix.verify",)),
    ):
        outputs[key] = lab.apply(ssh, *args)
    _completed(fault, outputs["apply"])
    fault.entry["runs"] = {k: v["rc"] for k, v in outputs.items()}
    env = lab.replica.dotenv_values()
    fault.check("the extra keys written", all(env.get(k) == v for k, v in extra.items()))
    fault.check(
        "queue keys read right (npm dotenv)",
        all(env.get(k) == v for k, v in managed_values(lab).items()),
    )
    _secret_free(fault, lab, ssh, values)
    for key, run in outputs.items():
        fault.check(f"no value in the {key} output", not any(v in run["output"] for v in values))
    files, journal = guest_hits(
        lab, values, ["/var/log", "/root/.pm2/logs", "/root/.pm2/pm2.log", THIN_DIR]
    )
    fault.entry["guest_hits"] = {"files": files, "journal_lines": journal}
    lab.extra_guest_hits += len(files) + journal
    fault.check("no value in guest logs, journal or salt-ssh dir", not files and not journal)
    fault.nothing_lost(changed_keys=tuple(extra))
    return fault.done("handled: the values written, shown nowhere")


# --------------------------------------------------------------------------------------------------
# 14: a password set by hand is never removed silently


def item14_requirepass_kept(lab):
    """redis.conf has ``requirepass`` set by hand, the pillar password is ``''``: refused; Redis
    still requires that password, redis.conf and the .env byte-identical."""
    fault = Fault(
        lab,
        "issue12/14 requirepass set by hand, pillar ''",
        "redis.conf: requirepass <X> set by hand; pillar redis:password ''",
    )
    lab.fresh("issue12/14: requirepass by hand")
    hand = "sfHand" + secrets.token_hex(10)
    _redis_by_hand(lab)
    lab.replica.ssh(
        f"umask 077; read -r p; printf '\\nrequirepass %s\\n' \"$p\" >> {REDIS_CONF} && "
        "systemctl restart redis-server",
        stdin=hand + "\n",
        timeout=120,
    )
    fault.check(
        "precondition: Redis requires the hand-set password",
        _redis_cli(lab, "ping").startswith("NOAUTH") and _redis_cli(lab, "ping", hand) == "PONG",
    )
    conf_before = guest_file(lab.replica, REDIS_CONF)[0]
    fault.before()
    ssh = lab.salt(
        "issue12-14-requirepass", pillar={"redis": {"password": ""}}, extra_secrets=[hand]
    )
    lab.apply(ssh, "test=True")
    result = lab.apply(ssh)
    _refused(fault, result)
    fault.check("redis.conf byte-identical", guest_file(lab.replica, REDIS_CONF)[0] == conf_before)
    fault.check(
        "Redis still refuses a client without the password",
        _redis_cli(lab, "ping").startswith("NOAUTH"),
    )
    fault.check("Redis still answers with it", _redis_cli(lab, "ping", hand) == "PONG")
    fault.check(".env byte-identical", guest_file(lab.replica, ENV_FILE)[0] == fault.env_bytes)
    fault.check("backend online and answering", backend_up(lab.replica))
    _secret_free(fault, lab, ssh, [hand])
    return fault.done("refused, the password kept")


# item -> the function that proves it (``--only issue12:1,14`` picks by item)
ISSUE12_CASES = {
    "1": item1_aof_switch_keeps_keys,
    "2": items2_4_refused,
    "3": item3_acl_xattr_kept,
    "4": items2_4_refused,
    "5": item5_latin1_bytes_kept,
    "13": item13_extra_values_secret,
    "14": item14_requirepass_kept,
}


def cases(items=None):
    """The case functions for ``items`` (all when None), each once, in item order."""
    picked = []
    for item, func in ISSUE12_CASES.items():
        if (items is None or item in items) and func not in picked:
            picked.append(func)
    return picked
