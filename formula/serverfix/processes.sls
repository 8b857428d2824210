# -*- coding: utf-8 -*-
# vim: ft=sls
# Phase 3: every app listed in serverfix:remove_processes (default: prisma-studio) stopped,
# deleted and gone from pm2's saved list, so a reboot or `pm2 resurrect` does not bring it back.
# (Called serverfix.prisma_studio before; that name stays as an alias of this file.)
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix with context %}
{%- set pm2 = serverfix.pm2 %}

include:
  - {{ tplroot }}.preflight

{%- for process in serverfix.remove_processes %}

{{ ('serverfix-pm2-' ~ process ~ '-absent') | json }}:
  pm2.absent:
    - name: {{ process | json }}
    - user: {{ pm2.user | json }}
    - pm2_home: {{ pm2.home | json }}
    - pm2_bin: {{ pm2.bin | json }}
    - backup_keep: {{ serverfix.dotenv.backup_keep | json }}
    - require:
      - serverfix-preflight
{%- endfor %}
