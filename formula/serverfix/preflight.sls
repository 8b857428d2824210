# -*- coding: utf-8 -*-
# vim: ft=sls
# Checks the pillar (and the files and tools the phases need) before anything changes.
# Every state of the other SLS files requires this one.
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix with context %}

serverfix-preflight:
  serverfix.preflight:
    - config: {{ serverfix | json }}
    - failhard: true
