# -*- coding: utf-8 -*-
# vim: ft=sls
# Checks the pillar (and the files and tools the phases need) before anything changes.
# Every state of the other SLS files requires this one; failhard stops the run on a problem.
---
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import serverfix, state_config with context %}

{#- state.apply <sls> does not sync _modules/_states (only a highstate does): say what to run #}
{%- if 'serverfix.preflight' not in salt %}
serverfix-preflight:
  test.fail_without_changes:
    - name: >-
        The serverfix custom modules are not on this minion, so nothing was changed.
        Run `salt <target> saltutil.sync_all` and apply again, or apply with
        `state.apply serverfix sync_mods=all` (masterless: `salt-call --local state.apply serverfix sync_mods=all`).
    - failhard: true
{%- else %}
serverfix-preflight:
  serverfix.preflight:
    - config: {{ state_config | json }}  # secrets as pillar references
    - failhard: true
{%- endif %}
