"""
backend.sls compiled (nothing applied): pm2 at boot (``pm2_startup.enabled``) is a state only
with serverfix:pm2:startup true, after the backend restart and the preflight.
"""


def test_pm2_startup_state_only_with_the_flag(modules):
    low = modules.state.show_low_sls("serverfix")
    assert isinstance(low, list), low
    assert "serverfix-pm2-startup" not in {chunk["__id__"] for chunk in low}  # report only

    pillar = {"serverfix": {"pm2": {"startup": True, "user": "root", "home": "/root/.pm2"}}}
    low = modules.state.show_low_sls("serverfix", pillar=pillar)
    assert isinstance(low, list), low
    by_id = {chunk["__id__"]: chunk for chunk in low}
    chunk = by_id["serverfix-pm2-startup"]
    assert chunk["state"] == "pm2_startup" and chunk["fun"] == "enabled"
    assert chunk["__sls__"] == "serverfix.backend"
    assert chunk["name"] == "intranet-backend" and chunk["pm2_home"] == "/root/.pm2"
    assert {"serverfix-preflight", "serverfix-backend-restarted"} <= {
        str(v)
        for req in chunk["require"]
        for v in (req.values() if isinstance(req, dict) else [req])
    }
    # after the restart, before verify
    order = [c["__id__"] for c in sorted(low, key=lambda c: c.get("order", 0))]
    assert order.index("serverfix-backend-restarted") < order.index("serverfix-pm2-startup")
    assert order.index("serverfix-pm2-startup") < order.index("serverfix-verified")
