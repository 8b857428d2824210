# -*- coding: utf-8 -*-
# vim: ft=sls
# The old name of Phase 3 (serverfix.processes: removes every listed pm2 app), kept for callers.
---
include: [{{ tpldir.split('/')[0] }}.processes]
