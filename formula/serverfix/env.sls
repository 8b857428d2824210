# -*- coding: utf-8 -*-
# vim: ft=sls
# Phase 2: the backend's .env gets the Redis and queue keys, edited in place after a backup.
# The dotenv state compares values as npm dotenv reads them (no churn) and never shows secrets.
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix, managed_env with context %}
{%- set dotenv = serverfix.dotenv %}

include:
  - {{ tplroot }}.preflight
  - {{ tplroot }}.redis

serverfix-env-keys-present:
  dotenv.present:
    - name: {{ dotenv.file | json }}
    # sort_keys=False: missing keys are appended in the runbook's order
    - values: {{ managed_env | json(sort_keys=False) }}
    - secret_keys: {{ (['REDIS_PASSWORD'] + dotenv.secret_keys) | json }}
    - create: {{ dotenv.create | json }}
    - user: {{ dotenv.user | json }}
    - group: {{ dotenv.group | json }}
    - mode: {{ dotenv.mode | json }}
    - backup_keep: {{ dotenv.backup_keep | json }}
    - backup_dir: {{ serverfix.backups.dir | json }}  # '' = next to the .env
    - require:
      - serverfix-preflight
{%- if serverfix.redis.enabled %}
      # Phase 2 follows Phase 1: the keys point at a Redis that answers
      - sls: {{ tplroot }}.redis
{%- endif %}
