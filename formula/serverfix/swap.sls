# -*- coding: utf-8 -*-
# vim: ft=sls
# Phase 4: a swap file of the pillar's size (active, 0600 root, one fstab line) and the memory
# tuning, applied now and persisted in a sysctl.d file that sorts after 99-sysctl.conf.
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix with context %}
{%- set swap = serverfix.swap %}

include:
  - {{ tplroot }}.preflight

{%- if swap.enabled %}

serverfix-swap-file-present:
  swapfile.present:
    - name: {{ swap.file | json }}
    - size: {{ swap.size | json }}
    - backup_dir: {{ serverfix.backups.dir | json }}  # of /etc/fstab
    - require:
      - serverfix-preflight

serverfix-swap-sysctl-persisted:
  sysctl_persist.present:
    - name: {{ swap.sysctl_file | json }}
    - values:
        vm.swappiness: {{ swap.swappiness | json }}
        vm.vfs_cache_pressure: {{ swap.vfs_cache_pressure | json }}
{%- if swap.overcommit_memory is not none and swap.overcommit_memory != '' %}
        vm.overcommit_memory: {{ swap.overcommit_memory | json }}
{%- endif %}
    - backup_dir: {{ serverfix.backups.dir | json }}
    - require:
      - serverfix-preflight
{%- endif %}
