# -*- coding: utf-8 -*-
# vim: ft=sls
# The rolling fix over many minions, run on the master (docs/rollout.md):
#
#   salt-run state.orchestrate serverfix.orch.rollout \
#     pillar='{"serverfix": {"rollout": {"target": "hetzner-*", "batch": 1, "restart": true}}}'
#
# Steps, each requiring the one before, so the first failure stops the rollout (the later
# steps report "One or more requisite failed" and never run):
#   rollout/targets                  the target resolved here, at render time (manage.status:
#                                    read-only); no minion, or one that does not answer, and
#                                    nothing else is rendered
#   rollout/test/<all ids>           preflight + test=True of `serverfix` on every host
#   rollout/canary/<id>              the whole fix on the canary, then
#   rollout/canary-verify/<id>       serverfix.verify on it (a failed check: retcode 1)
#   rollout/batch-<n>/<ids>          the rest, `batch` hosts per step, each step followed by
#   rollout/batch-<n>-verify/<ids>   its verify, before the next batch starts
# Batches are unrolled into steps with requisites rather than one salt.state with `batch:`: a
# verify gate between batches, and step ids that name their hosts (the summary outputter
# _output/serverfix_rollout.py reads them). Changes nothing itself; the minions' runs do.
---
{%- from "serverfix/map.jinja" import serverfix with context %}
{%- set rollout = serverfix.rollout %}
{%- set target = rollout.target %}
{%- set tgt_type = rollout.tgt_type %}
{%- set batch = rollout.batch %}
{%- set problems = [] %}
{%- set fix_pillar = "salt-run state.orchestrate serverfix.orch.rollout pillar='{\"serverfix\": {\"rollout\": {\"target\": \"hetzner-*\"}}}'" %}

{%- if target is not string or not target.strip() or '\n' in target %}
{%-   do problems.append("serverfix:rollout:target is not set: the rollout never guesses its hosts; give the minions to fix, e.g. " ~ fix_pillar) %}
{%- endif %}
{%- if tgt_type not in ['glob', 'pcre', 'list', 'grain', 'grain_pcre', 'pillar', 'pillar_pcre', 'nodegroup', 'compound', 'ipcidr'] %}
{%-   do problems.append("serverfix:rollout:tgt_type: " ~ (tgt_type | string) ~ " is not valid; expected one of glob, pcre, list, grain, grain_pcre, pillar, pillar_pcre, nodegroup, compound, ipcidr") %}
{%- endif %}
{%- if batch is not integer or batch is sameas true or batch is sameas false or batch < 1 %}
{%-   do problems.append("serverfix:rollout:batch: " ~ (batch | string) ~ " is not valid; expected an integer from 1 to 10000 (hosts fixed at once after the canary)") %}
{%- endif %}
{%- if rollout.restart is not sameas true and rollout.restart is not sameas false %}
{%-   do problems.append("serverfix:rollout:restart: " ~ (rollout.restart | string) ~ " is not valid; expected true or false") %}
{%- endif %}

{%- set ids = [] %}
{%- if not problems %}
{%-   set status = salt['saltutil.runner']('manage.status', tgt=target, tgt_type=tgt_type) %}
{%-   set up = (status.get('up') or []) | sort %}
{%-   set down = (status.get('down') or []) | sort %}
{%-   if not up and not down %}
{%-     do problems.append("serverfix:rollout:target: " ~ target ~ " (" ~ tgt_type ~ ") matches no minion; check the ids with `salt-key -L` and the target with `salt --preview-target '" ~ target ~ "'`, then give serverfix:rollout:target again") %}
{%-   elif down %}
{%-     do problems.append("not answering: " ~ down | join(', ') ~ " (of " ~ target ~ "); nothing was changed anywhere. Start their salt-minion (`systemctl start salt-minion` on each, then `salt '" ~ down | first ~ "' test.ping`), or leave them out of serverfix:rollout:target") %}
{%-   endif %}
{%-   do ids.extend(up) %}
{%- endif %}

{%- set canary = rollout.canary if rollout.canary else (ids | first if ids else '') %}
{%- if not problems and canary not in ids %}
{%-   do problems.append("serverfix:rollout:canary: " ~ canary ~ " is not among the target's minions (" ~ ids | join(', ') ~ "); give one of them, or '' for the first") %}
{%- endif %}

{%- if problems %}

rollout/targets:
  test.fail_without_changes:
    - comment: {{ problems | join('\n') | json }}

{%- else %}
{%-   set rest = ids | reject('equalto', canary) | list %}
{%-   set batches = [] %}
{%-   for start in range(0, rest | length, batch) %}
{%-     do batches.append(rest[start:start + batch]) %}
{%-   endfor %}
{#-   the restart consent as a pillar override: salt.state's pillar= is merged over each
      minion's own pillar, so the per-host settings still apply #}
{%-   set consent = {'serverfix': {'backend': {'restart': true}}} if rollout.restart else {} %}
{%-   macro apply(step, hosts, previous) %}
{{ step }}:
  salt.state:
    - tgt: {{ hosts | json }}
    - tgt_type: list
    - sls: serverfix
    {%- if consent %}
    - pillar: {{ consent | json }}
    {%- endif %}
    - expect_minions: true
    - require:
      - salt: {{ previous | json }}
{%-   endmacro %}
{%-   macro verify(step, hosts, previous) %}
{{ step }}:
  salt.function:
    - name: serverfix.verify
    - tgt: {{ hosts | json }}
    - tgt_type: list
    - expect_minions: true
    - require:
      - salt: {{ previous | json }}
{%-   endmacro %}

rollout/targets:
  test.succeed_without_changes:
    - comment: {{ ("targets: " ~ ids | join(', ') ~ "; canary " ~ canary ~ "; then "
                   ~ (batches | length) ~ " batch(es) of up to " ~ batch
                   ~ "; restart " ~ ("consented" if rollout.restart else "not consented"))
                  | json }}

rollout/test/{{ ids | join(',') }}:
  salt.state:
    - tgt: {{ ids | json }}
    - tgt_type: list
    - sls: serverfix
    - test: true
    {%- if consent %}
    - pillar: {{ consent | json }}
    {%- endif %}
    - expect_minions: true
    - require:
      - test: rollout/targets
{{ apply("rollout/canary/" ~ canary, [canary], "rollout/test/" ~ ids | join(',')) }}
{{ verify("rollout/canary-verify/" ~ canary, [canary], "rollout/canary/" ~ canary) }}
{%-   set previous = ["rollout/canary-verify/" ~ canary] %}
{%-   for hosts in batches %}
{%-     set step = "rollout/batch-" ~ loop.index ~ "/" ~ hosts | join(',') %}
{{ apply(step, hosts, previous | last) }}
{%-     set gate = "rollout/batch-" ~ loop.index ~ "-verify/" ~ hosts | join(',') %}
{{ verify(gate, hosts, step) }}
{%-     do previous.append(gate) %}
{%-   endfor %}
{%- endif %}
