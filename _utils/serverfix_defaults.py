"""
The formula's pillar defaults, for module code that runs without the file server (salt-ssh).

GENERATED from formula/serverfix/defaults.yaml by scripts/gen-defaults.py: edit the YAML and
rerun the script (a unit test fails when they differ).
"""

import copy
import json

_DEFAULTS_JSON = r"""
{
  "dotenv": {
    "file": "/var/www/intranet/backend/.env",
    "create": false,
    "user": "",
    "group": "",
    "mode": "0640",
    "backup_keep": 5,
    "secret_keys": [],
    "extra": {}
  },
  "redis": {
    "enabled": true,
    "pkg": "redis-server",
    "service": "redis-server",
    "config": "/etc/redis/redis.conf",
    "host": "127.0.0.1",
    "bind": [
      "127.0.0.1",
      "-::1"
    ],
    "port": 6379,
    "password": "",
    "db": 0,
    "maxmemory": "",
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
    "bin": ""
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
  }
}
"""


def defaults():
    """A fresh copy of the ``serverfix`` defaults (safe to modify)."""
    return copy.deepcopy(json.loads(_DEFAULTS_JSON))
