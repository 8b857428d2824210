# -*- coding: utf-8 -*-
# vim: ft=sls
# The runbook's phases in runbook order; preflight first so bad input stops the run early.
---
include:
  - .preflight
  - .redis
  - .env
  - .processes
  - .swap
  - .backend
  - .verify
