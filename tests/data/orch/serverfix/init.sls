# -*- coding: utf-8 -*-
# vim: ft=sls
# STUB of the formula's serverfix SLS for tests/integration/orch (fault injection; README.md).
---
{%- set faults = salt['serverfix.stub_faults']() %}
{%- set dir = salt['serverfix.stub_dir']() %}
{%- set name = salt['pillar.get']('serverfix:backend:name', '') %}
{%- set restart = salt['pillar.get']('serverfix:backend:restart', False) %}

serverfix-preflight:
  test.configurable_test_state:
    - changes: false
    - allow_test_mode_failure: true
    - result: {{ 'test' not in faults }}
    - comment: {{ (('preflight refused: serverfix:redis:password=hunter2secret is not accepted by ' ~ grains.id) if 'test' in faults else 'preflight passed') | json }}

serverfix-applied:
  file.managed:
    - name: {{ dir }}/applied-{{ grains.id }}
    - contents: "name={{ name }} restart={{ restart }}\n"
    - require:
      - test: serverfix-preflight

serverfix-backend:
  test.configurable_test_state:
    - changes: false
    - allow_test_mode_failure: false  # an apply fault only: test=True passes
    - result: {{ 'apply' not in faults }}
    - comment: {{ ('backend not ready after restart: REDIS_PASSWORD=hunter2secret rejected' if 'apply' in faults else 'backend ready') | json }}
    - require:
      - file: serverfix-applied
