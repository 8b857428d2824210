"""
swapfile states: an active swap file of an exact size with one fstab line, or none at all.

Thin over the ``swapfile`` execution module; test mode reports exactly the plan the real run
carries out (create / resize / rebuild / activate / nothing) and touches nothing. A refusal of
the module (``SaltException``) becomes ``result: False`` with its message and no changes.
"""

from typing import TYPE_CHECKING, Any

from salt.exceptions import SaltException

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]
    __opts__: dict[str, Any]

__virtualname__ = "swapfile"

# the execution module's default (swapfile.BACKUP_DIR)
BACKUP_DIR = "/var/backups/serverfix"


def __virtual__():
    if "swapfile.plan" in __salt__:
        return __virtualname__
    return (
        False,
        "the swapfile execution module is not loaded: run saltutil.sync_all, "
        "or state.apply serverfix sync_mods=all",
    )


PREDICTIONS = {
    "create": "would create {path} ({size}), swap it on",
    "resize": "would swap {path} off, resize it ({reason}) and swap it on again",
    "rebuild": "would rewrite {path} ({reason}) and swap it on",
    "activate": "would swap {path} on",
    "none": "{path} is an active {size} swap file",
}


def _failed(ret, exc, prefix=""):
    message = __utils__["serverfix_errors.message"](exc)
    ret.update(result=False, changes={}, comment=prefix + message)
    return ret


def _where(fstab, backup_dir):
    try:
        __utils__["serverfix_files.check_backup_dir"](backup_dir)
    except SaltException:
        return "(backup_dir is not valid)"
    return __utils__["serverfix_files.backup_location"](fstab, backup_dir)


def present(name, size, fstab="/etc/fstab", backup_dir=BACKUP_DIR):
    """
    ``name`` is an active swap file of exactly ``size`` (``2G``, ``512M``...), mode 0600 root,
    with exactly one line in ``fstab``. Created with ``fallocate`` (zeros where the file system
    or the kernel needs them); a different size is resized only when memory can take what is
    in swap. Refuses, creating nothing, without enough free disk space (plus a reserve).
    ``fstab`` is backed up below ``backup_dir`` before it is edited (its path mirrored,
    created 0700; ``''``: next to it); the comment says where.

    .. code-block:: yaml

        /swapfile:
          swapfile.present:
            - size: 2G
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        plan = __salt__["swapfile.plan"](name, size, fstab=fstab)
    except SaltException as exc:
        return _failed(ret, exc, "Nothing was changed: ")
    if __opts__["test"]:
        if plan["changes"]:
            try:
                __salt__["swapfile.preflight"](name, size, fstab=fstab)
            except SaltException as exc:
                return _failed(ret, exc, "The real run would fail: ")
        ret["changes"] = plan["changes"]
        words = PREDICTIONS[plan["action"]].format(path=name, size=size, reason=plan["reason"])
        if "mode" in plan["changes"]:
            words += "; would set mode 0600 root:root"
        if "leftover" in plan["changes"]:
            words += "; would remove the temporary file an interrupted run left"
        if "fstab" in plan["changes"]:
            words += f"; would make {fstab} hold exactly one line for it that swaps it on at boot"
            words += f" ({plan['fstab_reason']})" if plan.get("fstab_reason") else ""
            words += f", after a backup in {_where(fstab, backup_dir)}"
        ret["comment"] = words[0].upper() + words[1:] + "."
        if plan["changes"]:
            ret["result"] = None
        return ret
    try:
        done = __salt__["swapfile.ensure"](name, size, fstab=fstab, backup_dir=backup_dir)
    except SaltException as exc:
        return _failed(ret, exc)
    ret["changes"] = done["changes"]
    ret["comment"] = (
        done["comment"][0].upper()
        + done["comment"][1:]
        + (
            f"; {fstab} holds exactly one line for it ({done['fstab_reason']})"
            if "fstab" in done["changes"] and done.get("fstab_reason")
            else ""
        )
        + (f" (backup {done['backup']})." if done.get("backup") else ".")
    )
    return ret


def absent(name, fstab="/etc/fstab", backup_dir=BACKUP_DIR):
    """
    No swap file at ``name``: swapped off (only when memory can take what is in it), its
    ``fstab`` lines removed, the file deleted. A file there that is not swap is left alone.
    ``fstab`` is backed up below ``backup_dir`` first, as for :func:`present`.

    .. code-block:: yaml

        /swapfile:
          swapfile.absent
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        changes = __salt__["swapfile.plan_remove"](name, fstab=fstab)
    except SaltException as exc:
        return _failed(ret, exc, "Nothing was changed: ")
    if not changes:
        ret["comment"] = f"{name} is not a swap file and is not in {fstab}."
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = changes
        ret["comment"] = f"Would remove {name} ({', '.join(sorted(changes))})."
        if "fstab" in changes:
            ret["comment"] += f" {fstab} is backed up in {_where(fstab, backup_dir)} first."
        return ret
    try:
        ret["changes"] = __salt__["swapfile.remove"](name, fstab=fstab, backup_dir=backup_dir)
    except SaltException as exc:
        return _failed(ret, exc)
    ret["comment"] = f"Removed {name} ({', '.join(sorted(ret['changes']))})."
    if "fstab" in ret["changes"]:
        ret["comment"] += f" {fstab} was backed up in {_where(fstab, backup_dir)} first."
    return ret
