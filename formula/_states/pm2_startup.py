"""
pm2_startup state: pm2 starts at boot and resurrects app ``name``, so the fix survives a reboot.

Thin over the ``pm2_startup`` execution module: ``pm2_startup.plan`` says what is missing (the
unit ``pm2-<user>.service`` enabled, the app in ``dump.pm2``); in test mode the state predicts,
else it runs ``pm2 startup systemd`` and/or ``pm2 save`` and reads the result back.
"""

from typing import TYPE_CHECKING, Any

from salt.exceptions import SaltException

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]
    __opts__: dict[str, Any]

__virtualname__ = "pm2_startup"


def __virtual__():
    if "pm2_startup.plan" in __salt__:
        return __virtualname__
    return (False, "the pm2_startup execution module is not loaded: run saltutil.sync_all")


def _changes(plan):
    changes = {}
    boot = plan["boot"]
    if plan["startup"]:
        changes["unit"] = {
            "old": f"{boot['unit']}: {boot['state']}" + "; ".join([""] + boot["problems"]),
            "new": f"{boot['unit']}: enabled (pm2 startup systemd)",
        }
    if plan["save"]:
        also = [f"also saves {', '.join(plan['also_saved'])}"] if plan["also_saved"] else []
        also += [f"drops {', '.join(plan['also_dropped'])}"] if plan["also_dropped"] else []
        changes["dump.pm2"] = {
            "old": "without the app",
            "new": "with the app (pm2 save" + "".join(f"; {x}" for x in also) + ")",
        }
    return changes


def enabled(name, user="root", pm2_home="/root/.pm2", pm2_bin="", backup_keep=5, root="/"):
    """
    pm2 for ``user`` starts at boot (``pm2-<user>.service`` enabled, resurrecting
    ``pm2_home``) and app ``name`` is in its saved list, once it is online. Already so: no
    change and no pm2 call that changes anything. An app that is not online is not saved (its
    state would come back at boot); the comment says so.

    name
        The pm2 app that must come back after a reboot (the backend).
    user / pm2_home / pm2_bin
        The pm2 that runs it; ``pm2_home`` must be ``<home>/.pm2`` (pm2 startup's rule).
    backup_keep
        How many serverfix backups of ``dump.pm2`` to keep before ``pm2 save``.
    root
        Where systemd's unit files are read (``/``; tests give a directory tree).

    .. code-block:: yaml

        serverfix-pm2-startup:
          pm2_startup.enabled:
            - name: intranet-backend
            - user: root
            - pm2_home: /root/.pm2
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    kwargs = {"user": user, "pm2_home": pm2_home, "pm2_bin": pm2_bin}
    try:
        plan = __salt__["pm2_startup.plan"](name, root=root, **kwargs)
        if plan["startup"]:
            __salt__["pm2_startup.home_for"](pm2_home)  # refuse a PM2_HOME pm2 cannot write
        notes = []
        if not plan["in_dump"] and not plan["save"]:
            notes.append(
                f"{name} is {plan['backend'] or 'not running'}, not online: not saved to "
                "dump.pm2 (start it, then apply again)"
            )
        changes = _changes(plan)
        unit = plan["boot"]["unit"]
        if not changes:
            found = [f"{unit} is enabled for {pm2_home}"]
            found += [f"{name} is in dump.pm2"] if plan["in_dump"] else []
            ret["comment"] = "; ".join(found + notes)
            return ret
        ret["changes"] = changes
        steps = [f"pm2 startup systemd -u {user}"] if plan["startup"] else []
        steps += ["pm2 save"] if plan["save"] else []
        if __opts__["test"]:
            ret.update(result=None, comment="; ".join(["Would run " + " and ".join(steps)] + notes))
            return ret
        if plan["startup"]:
            __salt__["pm2_startup.startup"](**kwargs)
        if plan["save"]:
            __salt__["pm2_startup.save"](backup_keep=backup_keep, **kwargs)
        after = __salt__["pm2_startup.plan"](name, root=root, **kwargs)
        left = list(after["boot"]["problems"])
        left += [f"{name} is not in dump.pm2"] if plan["save"] and not after["in_dump"] else []
        if left:
            ret.update(
                result=False, changes={}, comment=f"After {' and '.join(steps)}: " + "; ".join(left)
            )
            return ret
        ret["comment"] = "; ".join(
            [f"Ran {' and '.join(steps)}: {unit} is enabled for {pm2_home}"]
            + ([f"{name} is in dump.pm2"] if after["in_dump"] else [])
            + notes
        )
    except SaltException as exc:
        ret.update(result=False, changes={}, comment=__utils__["serverfix_errors.message"](exc))
    return ret
