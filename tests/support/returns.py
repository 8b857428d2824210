"""Reading Salt state returns in tests."""


def by_id(state_return):
    """``{state id: state result dict}`` from a state.apply return (highstate shape)."""
    assert isinstance(state_return, dict), f"not a state return: {state_return!r}"
    return {key.split("_|-")[1]: value for key, value in state_return.items()}


def changed_ids(state_return):
    return sorted(sid for sid, res in by_id(state_return).items() if res.get("changes"))


def failed_ids(state_return):
    return sorted(sid for sid, res in by_id(state_return).items() if res.get("result") is False)


def summary(ret):
    """A short, readable account of a CLI state run for assertion messages."""
    data = ret.data
    if not isinstance(data, dict):
        return f"rc={ret.returncode} data={data!r} stderr={ret.stderr[-2000:]}"
    return f"rc={ret.returncode} " + "; ".join(
        f"{sid}: {res.get('result')} {str(res.get('comment'))[:300]!r} "
        f"changes={list(res.get('changes') or {})}"
        for sid, res in by_id(data).items()
    )
