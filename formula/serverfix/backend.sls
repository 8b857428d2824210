# -*- coding: utf-8 -*-
# vim: ft=sls
# Phase 5: restart intranet-backend ONLY with the operator's consent (serverfix:backend:restart,
# default false) and only when a restart is pending; then wait for the runbook's ready lines.
# Without consent the run reports "RESTART PENDING" and how to allow it, and changes nothing.
# With serverfix:pm2:startup true, then: pm2 at boot (pm2-<user>.service enabled) and the
# backend in pm2's saved dump.pm2 once it is online, so the fix survives a reboot.
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix, managed_env, state_config with context %}
{%- set backend = serverfix.backend %}
{%- set pm2 = serverfix.pm2 %}

include:
  - {{ tplroot }}.preflight
  - {{ tplroot }}.redis
  - {{ tplroot }}.env
  - {{ tplroot }}.processes
  - {{ tplroot }}.swap

serverfix-backend-restarted:
  pm2.restarted_ready:
    - name: {{ backend.name | json }}
    - user: {{ pm2.user | json }}
    - pm2_home: {{ pm2.home | json }}
    - pm2_bin: {{ pm2.bin | json }}
    - allowed: {{ backend.restart | json }}
    - force: {{ backend.force_restart | json }}
    - ready:
        patterns: {{ backend.ready_patterns | json }}
        timeout: {{ backend.ready_timeout | json }}
        rollback: {{ backend.rollback | json }}
    - env:
        file: {{ serverfix.dotenv.file | json }}
        # if pm2's saved start-time env has one of these, dotenv will not override it
        managed_keys: {{ managed_env | list | json }}
        shadowed: {{ backend.shadowed_env | json }}
        # never shown, not even for the formula's own keys; every other .env value is masked anyway
        secret_keys: {{ serverfix.dotenv.secret_keys | json }}
        backup_keep: {{ serverfix.dotenv.backup_keep | json }}
        # the rollback looks there (and next to the .env, for backups of earlier versions)
        backup_dir: {{ serverfix.backups.dir | json }}
    - redis:
        host: {{ (serverfix.redis.host if serverfix.redis.enabled else '') | json }}
        port: {{ serverfix.redis.port | json }}
        password: {{ state_config.redis.password | json }}  # a pillar reference
    - require:
      - serverfix-preflight
      # `[x]` globs match exactly that SLS but, unlike a plain name, tolerate one without
      # states (a phase switched off, e.g. serverfix:swap:enabled false)
      - sls: '{{ tplroot }}.processe[s]'
      - sls: '{{ tplroot }}.swa[p]'
      - sls: '{{ tplroot }}.redi[s]'
      - sls: '{{ tplroot }}.en[v]'
    # a change in Phase 1 (Redis) or Phase 2 (.env) in this run makes the restart pending. Not
    # `watch`: over salt-ssh that becomes `require` (the master does not know pm2's mod_watch)
    # and makes Salt load every module looking for it (~1 s per run)
    - changes_from: {{ [tplroot ~ '.redis', tplroot ~ '.env'] | json }}
{%- if pm2.startup %}

serverfix-pm2-startup:
  pm2_startup.enabled:
    - name: {{ backend.name | json }}
    - user: {{ pm2.user | json }}
    - pm2_home: {{ pm2.home | json }}
    - pm2_bin: {{ pm2.bin | json }}
    - backup_keep: {{ serverfix.dotenv.backup_keep | json }}
    - require:
      - serverfix-preflight
      # after the restart: `pm2 save` stores what runs then (a failed restart stops it)
      - serverfix-backend-restarted
{%- endif %}
