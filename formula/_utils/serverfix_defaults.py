"""
The formula's pillar defaults and managed .env keys, for module code that runs without the file
server (salt-ssh).

GENERATED from formula/serverfix/defaults.yaml by scripts/gen-defaults.py: edit the YAML and
rerun the script (a unit test fails when they differ).
"""

import copy
import json

_DEFAULTS_JSON = r"""
{
  "serverfix": {
    "backups": {
      "keep": 5,
      "dir": "/var/backups/serverfix"
    },
    "dotenv": {
      "file": "/var/www/intranet/backend/.env",
      "create": false,
      "user": "",
      "group": "",
      "mode": "0640",
      "backup_keep": 5,
      "secret_keys": [],
      "extra": {},
      "npm_version": ""
    },
    "redis": {
      "enabled": true,
      "pkg": "redis-server",
      "min_version": "6.2",
      "service": "redis-server",
      "config": "/etc/redis/redis.conf",
      "host": "127.0.0.1",
      "bind": [
        "127.0.0.1",
        "-::1"
      ],
      "allow_remote": false,
      "port": 6379,
      "password": "",
      "remove_password": false,
      "db": 0,
      "maxmemory": "auto",
      "maxmemory_policy": "noeviction",
      "appendonly": true,
      "appendfsync": "everysec"
    },
    "queue": {
      "enabled": true,
      "concurrency": 5
    },
    "pm2": {
      "user": "root",
      "home": "/root/.pm2",
      "bin": "",
      "startup": false,
      "log_warn_size": "100M"
    },
    "remove_processes": [
      "prisma-studio"
    ],
    "swap": {
      "enabled": true,
      "file": "/swapfile",
      "size": "2G",
      "swappiness": 10,
      "vfs_cache_pressure": 50,
      "overcommit_memory": 1,
      "sysctl_file": "/etc/sysctl.d/99-zz-serverfix.conf"
    },
    "backend": {
      "name": "intranet-backend",
      "restart": false,
      "force_restart": false,
      "ready_patterns": [
        "[Queue Service] ✅ Redis-Verbindung hergestellt",
        "[Queue] ✅ Workers gestartet"
      ],
      "ready_timeout": 60,
      "rollback": true,
      "shadowed_env": "fail"
    },
    "verify": {
      "enabled": true,
      "url": "",
      "requests": 10,
      "limit_ms": 100
    },
    "rollout": {
      "target": "",
      "tgt_type": "glob",
      "canary": "",
      "batch": 1,
      "restart": false
    }
  },
  "managed_env": {
    "REDIS_HOST": "redis:host",
    "REDIS_PORT": "redis:port",
    "REDIS_PASSWORD": "redis:password",
    "REDIS_DB": "redis:db",
    "QUEUE_ENABLED": "queue:enabled",
    "QUEUE_CONCURRENCY": "queue:concurrency"
  }
}
"""


def defaults():
    """A fresh copy of the ``serverfix`` defaults (safe to modify)."""
    return copy.deepcopy(json.loads(_DEFAULTS_JSON)["serverfix"])


def managed_env():
    """``{ENV_KEY: "section:key"}``: the .env keys the formula writes itself, in the
    runbook's order."""
    return dict(json.loads(_DEFAULTS_JSON)["managed_env"])
