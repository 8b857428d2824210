"""
The Redis version the formula's run would end up with, for the preflight: BullMQ needs Redis 6.2
or later (its compatibility page), and Ubuntu 22.04's package is 6.0.16. Read-only: the running
Redis's ``INFO server``, what ``redis-server --version`` prints, and the package's version:
installed (``dpkg-query``), else the candidate ``pkg.installed`` would install (``apt-cache
policy``). Reached as ``__utils__["serverfix_redisversion.<name>"]``; stdlib and salt only.
"""

import re
import shutil

from salt.exceptions import SaltException

NUMERIC_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)*)(.*)$")
SERVER_RE = re.compile(r"\bv=([0-9][^\s]*)")
NEWER_REDIS = (
    "get a newer Redis first: Redis's own APT repository (https://packages.redis.io/deb, see "
    "redis.io/docs 'Install Redis on Linux'), or a backport (Debian: bookworm-backports; "
    "Ubuntu: a newer release or a PPA), then apply again"
)


def upstream(version):
    """The upstream part of a Debian package version: no epoch (``5:``), no Debian revision
    (``-1~deb12u1``, ``-1ubuntu1``): ``5:7.0.15-1~deb12u1`` -> ``7.0.15``. ``None`` for none."""
    if not isinstance(version, str) or not version.strip():
        return None
    text = version.strip()
    if re.match(r"^[0-9]+:", text):
        text = text.split(":", 1)[1]
    if "-" in text:
        text = text.rsplit("-", 1)[0]
    return text or None


def parse(version):
    """``(numbers, prerelease)`` of a Redis or Debian package version, ``None`` when it does not
    start with a number: ``6:6.0.16-1ubuntu1`` -> ``((6, 0, 16), False)``; ``7.2.0~rc1`` ->
    ``((7, 2, 0), True)`` (a ``~`` sorts before the release, as dpkg sorts it); a ``+dfsg`` or
    other suffix is ignored."""
    text = upstream(version)
    match = NUMERIC_RE.match(text or "")
    if not match:
        return None
    numbers = tuple(int(part) for part in match.group(1).split("."))
    return numbers, match.group(2).startswith("~")


def at_least(version, minimum):
    """True when ``version`` is ``minimum`` or newer (both as :func:`parse` reads them; missing
    parts count as 0, a ``~`` pre-release of the minimum itself is older)."""
    have, wanted = parse(version), parse(minimum)
    if have is None or wanted is None:
        raise ValueError(f"not a version: {version if have is None else minimum!r}")
    width = max(len(have[0]), len(wanted[0]))
    numbers = have[0] + (0,) * (width - len(have[0]))
    need = wanted[0] + (0,) * (width - len(wanted[0]))
    if numbers != need:
        return numbers > need
    return not have[1] or wanted[1]


def policy(stdout):
    """``{"installed": str | None, "candidate": str | None}`` from ``apt-cache policy <pkg>``
    (``(none)`` is None)."""
    versions = {"installed": None, "candidate": None}
    for line in (stdout or "").splitlines():
        key, _, value = line.strip().partition(":")
        if key.lower() in versions and value.strip() and value.strip() != "(none)":
            versions[key.lower()] = value.strip()
    return versions


def server(stdout):
    """The version ``redis-server --version`` prints (``Redis server v=7.0.15 sha=...``)."""
    match = SERVER_RE.search(stdout or "")
    return match.group(1) if match else None


def _run(salt, argv):
    if shutil.which(argv[0]) is None:
        return None
    ret = salt["cmd.run_all"](
        argv,
        python_shell=False,
        ignore_retcode=True,
        output_loglevel="quiet",
        env={"LC_ALL": "C"},
        timeout=30,
    )
    return ret["stdout"] if ret.get("retcode") == 0 else None


def info_version(text):
    """``redis_version`` from an ``INFO server`` reply."""
    for line in (text or "").splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip() or None
    return None


def found(pkg, salt, port=None, host="127.0.0.1", password=None):
    """The Redis versions this run would use, as ``[{"version", "raw", "source"}]``: the Redis
    that answers ``INFO server`` at ``host``:``port`` (when given and reachable), the
    ``redis-server`` on PATH, and the package ``pkg`` (installed, else the candidate apt would
    install). Empty when none can be read (not a Debian-like host, no Redis yet)."""
    versions = []
    if port and "redis_server.command" in salt:
        try:
            reply = salt["redis_server.command"](
                "INFO",
                "server",
                host=host,
                port=port,
                password=password if isinstance(password, str) and password else None,
                timeout=1.0,
            )
        except SaltException:  # not running, or it wants another password: no evidence
            reply = None
        raw = info_version(reply if isinstance(reply, str) else None)
        if raw:
            versions.append({"version": raw, "raw": raw, "source": f"running at {host}:{port}"})
    raw = server(_run(salt, ["redis-server", "--version"]))
    if raw:
        versions.append({"version": raw, "raw": raw, "source": "redis-server --version"})
    if pkg:
        # dpkg answers in milliseconds; apt-cache policy (over a second) only before the install
        status = (
            _run(salt, ["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", pkg]) or ""
        ).split()
        if len(status) == 2 and status[0] == "installed":
            raw, source = status[1], f"dpkg: {pkg} installed"
        else:
            apt = policy(_run(salt, ["apt-cache", "policy", pkg]))
            key = "installed" if apt["installed"] else "candidate"
            raw = apt[key]
            source = f"apt-cache policy {pkg}: " + (
                "installed" if key == "installed" else "what apt would install"
            )
        if raw:
            versions.append({"version": upstream(raw), "raw": raw, "source": source})
    return versions


def problems(versions, minimum, key):
    """One message per version in ``versions`` (:func:`found`) older than ``minimum``, naming the
    pillar ``key``, the version found, the minimum and how to get a newer Redis."""
    messages = []
    for item in versions:
        try:
            old = not at_least(item["raw"], minimum)
        except ValueError:
            continue  # an unreadable version is no evidence either way
        if old:
            messages.append(
                f"{key}: Redis {item['version']} ({item['source']}: {item['raw']}) is older than "
                f"{minimum}, the minimum BullMQ needs; nothing was changed. To fix, "
                f"{NEWER_REDIS} (or set {key} lower at your own risk)"
            )
    return messages
