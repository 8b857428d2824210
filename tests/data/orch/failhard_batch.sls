# -*- coding: utf-8 -*-
# vim: ft=sls
# Salt's own mechanism, for tests/integration/orch/test_failhard_batch.py: one salt.state over
# the minions given in pillar `ids`, `batch: 1` with `failhard: true` (salt#54521, #44256);
# pillar `failhard: false` is the control run.
---
failhard-batch:
  salt.state:
    - tgt: {{ salt['pillar.get']('ids') | json }}
    - tgt_type: list
    - sls: serverfix
    - batch: 1
    - failhard: {{ salt['pillar.get']('failhard', True) | json }}
