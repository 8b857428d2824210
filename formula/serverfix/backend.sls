# -*- coding: utf-8 -*-
# vim: ft=sls
# Placeholder: filled in by its own issue.
---
{%- set tplroot = tpldir.split('/')[0] %}

include:
  - {{ tplroot }}.preflight
