# -*- coding: utf-8 -*-
# vim: ft=sls
# Phase 2: the backend's .env gets the Redis and queue keys, edited in place after a backup.
# The dotenv state compares values as npm dotenv reads them (no churn) and never shows secrets.
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix with context %}
{%- set dotenv = serverfix.dotenv %}
{%- set values = {} %}
{%- do values.update({
      'REDIS_HOST': serverfix.redis.host,
      'REDIS_PORT': serverfix.redis.port,
      'REDIS_PASSWORD': serverfix.redis.password,
      'REDIS_DB': serverfix.redis.db,
      'QUEUE_ENABLED': 'true' if serverfix.queue.enabled is sameas true else 'false',
      'QUEUE_CONCURRENCY': serverfix.queue.concurrency,
    }) %}
{#- the pillar's extra keys are appended after these; the managed keys win over a clash #}
{%- for key, value in dotenv.extra | dictsort %}
{%-   if key not in values %}{%- do values.update({key: value}) %}{%- endif %}
{%- endfor %}

include:
  - {{ tplroot }}.preflight
  - {{ tplroot }}.redis

serverfix-env-keys-present:
  dotenv.present:
    - name: {{ dotenv.file | json }}
    # sort_keys=False: missing keys are appended in the runbook's order
    - values: {{ values | json(sort_keys=False) }}
    - secret_keys: {{ (['REDIS_PASSWORD'] + dotenv.secret_keys) | json }}
    - create: {{ dotenv.create | json }}
    - user: {{ dotenv.user | json }}
    - group: {{ dotenv.group | json }}
    - mode: {{ dotenv.mode | json }}
    - backup_keep: {{ dotenv.backup_keep | json }}
    - require:
      - serverfix-preflight
{%- if serverfix.redis.enabled %}
      # Phase 2 follows Phase 1: the keys point at a Redis that answers
      - sls: {{ tplroot }}.redis
{%- endif %}
