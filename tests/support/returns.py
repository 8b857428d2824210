"""Helpers for reading Salt state returns and host snapshots in tests."""

import hashlib
import subprocess
import time


def by_id(state_return):
    """``{state id: state result dict}`` from a state.apply return (highstate shape)."""
    assert isinstance(state_return, dict), f"not a state return: {state_return!r}"
    return {key.split("_|-")[1]: value for key, value in state_return.items()}


def changed_ids(state_return):
    return sorted(sid for sid, res in by_id(state_return).items() if res.get("changes"))


def failed_ids(state_return):
    return sorted(sid for sid, res in by_id(state_return).items() if res.get("result") is False)


def sha256(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def dpkg_installed(package):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return out.returncode == 0 and "ok installed" in out.stdout


def wait_for(predicate, timeout, interval=0.5):
    """Call ``predicate`` until it returns something true or ``timeout`` seconds pass; its last value."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(interval)


def summary(ret):
    """A short, readable account of a CLI state run for assertion messages."""
    data = ret.data
    if not isinstance(data, dict):
        return f"rc={ret.returncode} data={data!r} stderr={ret.stderr[-2000:]}"
    return f"rc={ret.returncode} " + "; ".join(
        f"{sid}: {res.get('result')} {str(res.get('comment'))[:300]!r} changes={list(res.get('changes') or {})}"
        for sid, res in by_id(data).items())
