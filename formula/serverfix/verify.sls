# -*- coding: utf-8 -*-
# vim: ft=sls
# Phase 6: the runbook's checks ("Verifizierung nach Fix") as the last state; a failing check
# fails the run. Read-only. In test=True it reports what it would check (result None) instead
# of failing on changes that are not applied yet. `salt <minion> serverfix.verify` runs the
# same checks on their own.
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix, state_config with context %}

include:
  - {{ tplroot }}.preflight
  - {{ tplroot }}.redis
  - {{ tplroot }}.env
  - {{ tplroot }}.processes
  - {{ tplroot }}.swap
  - {{ tplroot }}.backend

{%- if serverfix.verify.enabled %}

serverfix-verified:
  serverfix.verified:
    - config: {{ state_config | json }}  # secrets as pillar references
    - order: last
    - require:
      - serverfix: serverfix-preflight
      # `[x]` globs match exactly that SLS but, unlike a plain name, tolerate one that renders no
      # state (a phase switched off in the pillar); see backend.sls
      - sls: '{{ tplroot }}.redi[s]'
      - sls: '{{ tplroot }}.en[v]'
      - sls: '{{ tplroot }}.processe[s]'
      - sls: '{{ tplroot }}.swa[p]'
      - sls: '{{ tplroot }}.backen[d]'
{%- endif %}
