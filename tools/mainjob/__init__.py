"""
The main job (``./scripts/run-replica.sh`` runs ``python -m tools.mainjob``): the operator's whole
job on the replica of the server, over salt-ssh with the roster entry ``hetzner``:

1. ``serverfix.diagnose`` reports the runbook's four problems (and POST /reservations is slow);
2. ``state.apply serverfix test=True`` predicts the changes and changes nothing;
3. apply without the restart flag: everything but the restart, which is reported as pending;
4. apply with ``serverfix:backend:restart: true``: backend restarted, ready lines logged, queue
   mode;
5. ``serverfix.verify`` passes (and POST /reservations is fast);
6. re-apply: zero changes (with and without the flag);
7. reboot: Redis up, prisma-studio still gone, backend online in queue mode, /swapfile on from
   fstab, the persisted sysctls back;
8. POST /reservations p50/p95 before (step 1) vs after (step 5).

``steps.py`` holds the steps (tests/e2e/test_replica_salt_ssh.py calls them, one test each),
``summary.py`` the summary and the JSON file, ``__main__.py`` the command line.
"""
