"""
The compiled formula (defaults only, nothing applied): every state depends on the preflight, so
bad input stops the run before anything changes; the phases run in runbook order.
"""

PHASES = ["preflight", "redis", "env", "processes", "swap", "backend", "verify"]


def _requisite_ids(chunk):
    ids = set()
    for kind in ("require", "watch", "onchanges", "prereq"):
        for req in chunk.get(kind, []):
            if isinstance(req, dict):
                ids.update(str(v) for v in req.values())
            else:
                ids.add(str(req))
    return ids


def test_every_state_depends_on_preflight(modules):
    low = modules.state.show_low_sls("serverfix")
    assert isinstance(low, list), low
    by_id = {chunk["__id__"]: chunk for chunk in low}
    by_name = {chunk["name"]: chunk["__id__"] for chunk in low}

    def reaches_preflight(sid, seen=()):
        if sid == "serverfix-preflight":
            return True
        reqs = {by_name.get(r, r) for r in _requisite_ids(by_id[sid])}
        return any(
            reaches_preflight(r, seen + (sid,)) for r in reqs if r in by_id and r not in seen
        )

    orphans = [sid for sid in by_id if not reaches_preflight(sid)]
    assert not orphans, f"states that could run before the preflight: {orphans}"
    assert by_id["serverfix-preflight"].get("failhard") is True


def test_phases_in_runbook_order(modules):
    low = modules.state.show_low_sls("serverfix")
    order = []
    for chunk in sorted(low, key=lambda c: c.get("order", 0)):
        phase = chunk["__sls__"].split(".", 1)[-1]
        if not order or order[-1] != phase:
            order.append(phase)
    assert [p for p in PHASES if p in order] == order, order


def test_integers_given_as_strings_reach_the_states_as_ints(modules):
    # "10" from a quoted YAML value: the kernel and sysctl files get 10, an int
    pillar = {"serverfix": {"swap": {"swappiness": "10"}, "redis": {"port": "6380"}}}
    low = modules.state.show_low_sls("serverfix", pillar=pillar)
    assert isinstance(low, list), low
    by_id = {chunk["__id__"]: chunk for chunk in low}
    values = by_id["serverfix-swap-sysctl-persisted"]["values"]
    assert values["vm.swappiness"] == 10 and not isinstance(values["vm.swappiness"], (bool, str))
    config = by_id["serverfix-preflight"]["config"]
    assert config["redis"]["port"] == 6380 and config["swap"]["swappiness"] == 10


def test_the_backup_dir_reaches_every_state_that_backs_up(modules):
    """serverfix:backups:dir (default /var/backups/serverfix) goes to each state as backup_dir."""
    for pillar, wanted in (
        ({}, "/var/backups/serverfix"),
        ({"serverfix": {"backups": {"dir": "/srv/bak"}}}, "/srv/bak"),
        ({"serverfix": {"backups": {"dir": ""}}}, ""),
    ):
        low = modules.state.show_low_sls("serverfix", pillar=pillar)
        assert isinstance(low, list), low
        by_id = {chunk["__id__"]: chunk for chunk in low}
        for sid in (
            "serverfix-env-keys-present",
            "serverfix-redis-config-edited",
            "serverfix-swap-file-present",
            "serverfix-swap-sysctl-persisted",
        ):
            assert by_id[sid]["backup_dir"] == wanted, (sid, pillar)
        assert by_id["serverfix-backend-restarted"]["env"]["backup_dir"] == wanted
        assert by_id["serverfix-preflight"]["config"]["backups"]["dir"] == wanted


def test_memory_safety_reaches_the_states(modules):
    # defaults: maxmemory auto (sized on the minion, for the Redis service's cgroup) and
    # vm.overcommit_memory 1 in the swap sysctls; '' / null / "0" as the pillar says
    by_id = {chunk["__id__"]: chunk for chunk in modules.state.show_low_sls("serverfix")}
    conf = by_id["serverfix-redis-config-edited"]
    assert (conf["maxmemory"], conf["service"]) == ("auto", "redis-server")
    assert by_id["serverfix-swap-sysctl-persisted"]["values"]["vm.overcommit_memory"] == 1
    for given, sent in (("", None), (None, None), ("0", 0)):
        pillar = {"serverfix": {"swap": {"overcommit_memory": given}, "redis": {"maxmemory": 0}}}
        low = modules.state.show_low_sls("serverfix", pillar=pillar)
        by_id = {chunk["__id__"]: chunk for chunk in low}
        values = by_id["serverfix-swap-sysctl-persisted"]["values"]
        assert values.get("vm.overcommit_memory") == sent, (given, values)
        assert by_id["serverfix-redis-config-edited"]["maxmemory"] == 0
