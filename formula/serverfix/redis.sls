# -*- coding: utf-8 -*-
# vim: ft=sls
# Phase 1: Redis installed, bound to loopback, persistent, queue-safe, running, answering PING.
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix, state_config with context %}
{%- set redis = serverfix.redis %}

include:
  - {{ tplroot }}.preflight

{%- if redis.enabled %}

serverfix-redis-package-installed:
  pkg.installed:
    - name: {{ redis.pkg | json }}
    - require:
      - serverfix-preflight  # any module: an unsynced minion gets a test.fail state here

serverfix-redis-config-edited:
  redis_server.configured:
    - name: {{ redis.config | json }}
    - bind: {{ redis.bind | json }}
    - port: {{ redis.port | json }}
    - password: {{ state_config.redis.password | json }}  # a pillar reference
    - maxmemory: {{ redis.maxmemory | json }}
    - service: {{ redis.service | json }}  # maxmemory auto: its cgroup's memory limit counts
    - maxmemory_policy: {{ redis.maxmemory_policy | json }}
    - appendonly: {{ redis.appendonly | json }}
    - appendfsync: {{ redis.appendfsync | json }}
    - backup_keep: {{ serverfix.dotenv.backup_keep | json }}
    - backup_dir: {{ serverfix.backups.dir | json }}
    - pkg: {{ redis.pkg | json }}
    # an empty password never removes a requirepass set by hand unless the pillar says so
    - remove_password: {{ redis.get('remove_password', False) | json }}
    - require:
      - pkg: serverfix-redis-package-installed

# restarted (not only reloaded) when the config changed: bind/port need a restart. The state
# sees that itself (a Redis started before the config's last change; in test mode the config
# state's predicted changes): `watch` on a custom state is turned into `require` over salt-ssh
# and makes Salt load every module looking for its mod_watch (~1 s per run)
serverfix-redis-service-running:
  redis_server.running:
    - name: {{ redis.service | json }}
    - enable: true
    - config: {{ redis.config | json }}
    - require:
      - redis_server: serverfix-redis-config-edited
      - pkg: serverfix-redis-package-installed

# the service manager can say "running" while Redis refuses connections: ask Redis itself
serverfix-redis-answers-ping:
  redis_server.pong:
    - name: {{ redis.host | json }}
    - port: {{ redis.port | json }}
    - password: {{ state_config.redis.password | json }}  # a pillar reference
    - require:
      - redis_server: serverfix-redis-service-running
{%- endif %}
