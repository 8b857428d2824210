# -*- coding: utf-8 -*-
# vim: ft=sls
# Phase 6: the runbook's checks ("Verifizierung nach Fix") as the last state; a failing check
# fails the run. Read-only. In test=True it reports what it would check (result None) instead
# of failing on changes that are not applied yet. `salt <minion> serverfix.verify` runs the
# same checks on their own.
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix with context %}

include:
  - {{ tplroot }}.preflight
  - {{ tplroot }}.redis
  - {{ tplroot }}.env
  - {{ tplroot }}.prisma_studio
  - {{ tplroot }}.swap
  - {{ tplroot }}.backend

{%- if serverfix.verify.enabled %}

serverfix-verified:
  serverfix.verified:
    - config: {{ serverfix | json }}
    - order: last
    # `order: last` keeps it after every phase; an `sls` requisite on a phase that renders no
    # state (disabled in the pillar) would be a compile error, hence the conditions
    - require:
      - serverfix-preflight
{%- if serverfix.redis.enabled %}
      - sls: {{ tplroot }}.redis
{%- endif %}
      - sls: {{ tplroot }}.env
{%- if serverfix.swap.enabled %}
      - sls: {{ tplroot }}.swap
{%- endif %}
{%- endif %}
