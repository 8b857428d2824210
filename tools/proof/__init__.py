"""
Proof in numbers: how far ``test=True`` and the second run of the serverfix formula can be trusted,
measured on the replica host (scripts/replica.sh) over salt-ssh with the roster entry ``hetzner``.

- **Preview fidelity**: for every state id, "would change" (``test=True``: result None with
  changes) against "did change" (the real run: changes), both ways, from the "before" replica, for
  the restart step, for the fix in one go with the restart flag, and from a half-fixed replica
  (Redis installed, ``.env`` partly done, prisma-studio deleted but still saved, no swap).
- **Idempotence**: the run after the fix reports zero changes and makes no mutating pm2,
  package-manager, systemctl, swap or sysctl call (counted by wrappers on the guest's PATH, below).
- **Fault matrix**: each fault from a clean replica; each must end with a clear error (or be handled
  correctly) and lose nothing: the ``.env`` byte-identical or restored, the backend running, no
  half-made swap file.
- **Secrets**: with a Redis password set, the password appears in no salt-ssh output or log, no
  guest log, no process argv sampled during the runs, no world-readable file; ``.env`` backups are
  0600. Issue 12's secrets (``dotenv:extra`` values, URL credentials, a hand-set ``requirepass``)
  are searched in every output of every run too.
- **Speed**: medians of interleaved runs: the no-op re-apply and the ``test=True`` preview of
  ``serverfix`` against a one-state SLS over the same transport; the full apply from "before";
  ``serverfix.diagnose`` and ``serverfix.verify``; pm2 invocations per run.

Used by ``scripts/proof-report.sh`` (``python -m tools.proof``: everything, a table on the
terminal and a JSON file) and by ``tests/e2e/test_proof_*.py`` (the same measurements, asserted).
Its replica is named ``proof`` (its own run dir, veth, NAT table and lock), so it never tears
down someone else's. Run it alone on the machine: its figures are wall times, and a replica beside
it with the same ``/swapfile`` path would show in its /proc/swaps (one kernel).

How calls are counted (calls.py): ``ProofReplica.instrument()`` puts small wrapper scripts in the
guest's ``/usr/local/sbin`` (first on root's PATH) for apt-get, apt, apt-cache, dpkg, dpkg-query,
systemctl, sysctl, swapon, swapoff and mkswap, and in place of pm2's own ``bin/pm2`` (the real one
renamed next to it, so ``pm2.version`` still finds its package.json). Each wrapper appends one
record (tool, whether a salt-ssh run is among its ancestors, argv; NUL-terminated) to a 0600 file
in the guest's /run and execs the real tool. The argv records are also searched for the password.

The package, one job per file:

- ``lab.py``: the proof replica, salt-ssh with the baseline SLS, the ``Lab`` and guest facts;
- ``calls.py``: the call-counting wrappers and which calls mutate;
- ``argv.py``: the argv sampler (guest ``ps`` and host ``/proc``);
- ``stats.py``: fidelity, idempotence and run summaries from state returns;
- ``scenarios.py``: the main sequence, speed, secrets scan, one go, half-fixed;
- ``faults.py``: the fault matrix on fresh replicas; ``preflight_faults.py``: what the preflight
  refuses; ``issue12.py``: issue 12's cases (full mode, or ``--only issue12``);
- ``report.py``: recording sections, the goals, the JSON file; ``render.py``: the table;
- ``__main__.py``: the command line (``python -m tools.proof``).
"""
