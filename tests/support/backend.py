"""
The stand-in intranet backend (tests/apps): its scripts, its ready lines and its .env before and
after Phase 2. Values the formula owns come from its defaults (formula/serverfix/defaults.yaml).
"""

import os
from pathlib import Path

from tests.support.loader import DEFAULTS
from tests.support.paths import APPS

BACKEND_APP = APPS / "diag_backend.js"
IDLE_APP = APPS / "diag_idle.js"
READY = DEFAULTS["backend"]["ready_patterns"]  # the lines the app logs once its queue workers run
ENV_HEADER = "NODE_ENV=production\nDATABASE_URL=postgresql://intranet@127.0.0.1/intranet\n"
ENV_BEFORE = (
    "# intranet backend (stand-in), before the fix\n"
    "NODE_ENV=production\n"
    "JWT_SECRET=jwt-s3cr3t-value\n"
    "QUEUE_ENABLED=false\n"
)
# the managed .env keys with the defaults' values; REDIS_HOST/REDIS_PORT are per test
QUEUE_KEYS = {
    "REDIS_DB": str(DEFAULTS["redis"]["db"]),
    "REDIS_PASSWORD": DEFAULTS["redis"]["password"],
    "QUEUE_ENABLED": "true" if DEFAULTS["queue"]["enabled"] else "false",
    "QUEUE_CONCURRENCY": str(DEFAULTS["queue"]["concurrency"]),
}
# what Phase 2 writes for Redis on 127.0.0.1:6379 with a password, in the runbook's order
ENV_AFTER_VALUES = {
    "REDIS_HOST": "127.0.0.1",
    "REDIS_PORT": "6379",
    "REDIS_PASSWORD": "hunter2-redis-pw",
    **{key: value for key, value in QUEUE_KEYS.items() if key != "REDIS_PASSWORD"},
}


def write_env(path, content, mtime=None, header=ENV_HEADER):
    """A backend .env at ``path`` (mode 0640, parent directories made): ``content`` as is when it
    is text, else ``header`` and then the mapping as KEY=value lines; ``mtime`` (epoch seconds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(content, str):
        content = header + "".join(f"{key}={value}\n" for key, value in content.items())
    path.write_text(content, encoding="utf-8")
    path.chmod(0o640)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def env_after():
    """ENV_BEFORE with the queue keys as Phase 2 writes them (the queue on)."""
    return ENV_BEFORE.replace("QUEUE_ENABLED=false\n", "") + "".join(
        f"{key}={value}\n" for key, value in ENV_AFTER_VALUES.items()
    )
