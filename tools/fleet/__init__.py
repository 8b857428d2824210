"""
The fleet benchmark: the rollout (formula/serverfix/orch/rollout.sls) through a real salt-master on
N replicas side by side, and the no-op ratio over both transports, as one report.

- **Scaling**: for each N (``--sizes``, default 1,2,3) and each batch size (all hosts at once after
  the canary, and 1), a fresh fleet of N replicas in the "before" state gets the whole rollout
  (restart consented); its wall time and the ratio to N = 1 with the same batch.
- **No-op**: on one fixed host, interleaved repetitions (``--reps``) of ``state.apply serverfix``
  (nothing to do) and of a one-state SLS, over master/minion (``salt hetzner-1 …``) and over
  salt-ssh (the same host, its own roster), with and without test=True: medians and ratios.

``python -m tools.fleet [--sizes 1,2,3] [--reps 5]`` prints the tables and writes
artifacts/fleet-report.json. It needs root and boots up to max(sizes) replicas at once
(scripts/replica.sh fleet); run it alone on the machine (the figures are wall times).
"""
