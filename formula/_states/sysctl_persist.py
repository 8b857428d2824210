"""
sysctl_persist states: kernel settings set now and persisted in a sysctl.d file that wins.

Thin over the ``sysctl_persist`` execution module. Warns (``warnings`` in the return) when
another file would still set a different value later; a refusal of the module
(``SaltException``) becomes ``result: False`` with its message and no changes.
"""

from typing import TYPE_CHECKING, Any

from salt.exceptions import SaltException

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]
    __opts__: dict[str, Any]

__virtualname__ = "sysctl_persist"


def __virtual__():
    if "sysctl_persist.plan" in __salt__:
        return __virtualname__
    return (
        False,
        "the sysctl_persist execution module is not loaded: run saltutil.sync_all, "
        "or state.apply serverfix sync_mods=all",
    )


def present(
    name, values, dirs=None, sysctl_conf="/etc/sysctl.conf", backup_dir="/var/backups/serverfix"
):
    """
    Every ``values`` key set in the running kernel and persisted in the file ``name`` (under
    ``/etc/sysctl.d/``, named to sort after ``99-sysctl.conf``).

    dirs
        The sysctl.d directories in precedence order (default: systemd's and procps' list);
        only for checking which file would override ``name``.
    backup_dir
        Where the backup of an older version of ``name`` goes (its path mirrored, created
        0700; ``''``: next to it); the comment names the backup.

    .. code-block:: yaml

        /etc/sysctl.d/99-zz-serverfix.conf:
          sysctl_persist.present:
            - values:
                vm.swappiness: 10
                vm.vfs_cache_pressure: 50
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    kwargs = {"sysctl_conf": sysctl_conf}
    if dirs:
        kwargs["dirs"] = dirs
    try:
        plan = __salt__["sysctl_persist.plan"](name, values, **kwargs)
    except SaltException as exc:
        ret["result"] = False
        ret["comment"] = "Nothing was changed: " + __utils__["serverfix_errors.message"](exc)
        return ret
    if plan["warnings"]:
        ret["warnings"] = plan["warnings"]
    warn = (" Warning: " + " ".join(plan["warnings"])) if plan["warnings"] else ""
    settings = ", ".join(f"{k} = {v}" for k, v in sorted(values.items()))
    if not plan["changes"]:
        ret["comment"] = f"{settings} already set and persisted in {name}.{warn}"
        return ret
    what = sorted(plan["changes"])
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = plan["changes"]
        ret["comment"] = f"Would set {', '.join(what)}.{warn}"
        return ret
    try:
        done = __salt__["sysctl_persist.apply"](name, values, backup_dir=backup_dir, **kwargs)
    except SaltException as exc:
        ret["result"] = False
        ret["comment"] = __utils__["serverfix_errors.message"](exc)
        return ret
    ret["changes"] = done["changes"]
    backup = f" (backup {done['backup']})" if done.get("backup") else ""
    ret["comment"] = f"Set {', '.join(what)}{backup}.{warn}"
    return ret
