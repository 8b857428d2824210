"""
The swap file decision, pure (no system access): from the facts about a path (``swapfile.status``)
to what it takes to get an active swap file of the wanted size, and why it would refuse. The
state's test mode and the real run both come from here. Standard library only.

Reached from the ``swapfile`` module as ``__utils__["serverfix_swapplan.decide"]``.
"""

# free space left on the file system after the swap file is written (logs, package updates...)
DISK_RESERVE = 256 << 20
# RAM that must stay available after swapoff has pulled the swapped-out pages back in
MEMORY_HEADROOM = 128 << 20
SIGNATURE = b"SWAPSPACE2"


def human(size):
    """``2147483648`` -> ``'2G'`` (exact units only, else bytes)."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size} bytes"


def decide(st, wanted, free_bytes, mem_available, reserve=DISK_RESERVE, reclaim=0):
    """
    What it takes to get from ``st`` (see ``swapfile.status``) to an active swap file of ``wanted``
    bytes: ``{"action", "changes", "errors", "reason"}``. Pure: the test-mode prediction and
    the real run both come from here.

    action: ``none``, ``create``, ``resize`` (swapoff first), ``rebuild`` (inactive file that is
    the wrong size, has holes or is copy-on-write), ``activate``. fstab and mode are separate keys
    of ``changes`` (``fstab`` is filled in by ``swapfile.plan``). ``reclaim``: bytes of a
    temporary file a killed run left behind, removed before the new file is written.
    """
    path = st["path"]
    result = {"action": "none", "changes": {}, "errors": [], "reason": ""}
    errors = result["errors"]
    if st["exists"] and not st["is_file"]:
        errors.append(f"{path} exists and is not a regular file; choose another path")
        return result
    if st["exists"] and not st["is_swap"] and not st["active"]:
        errors.append(
            f"{path} exists and is not a swap area (no {SIGNATURE.decode()} "
            "signature): it may hold data, so it is left alone; move it away or choose another path"
        )
        return result
    if not st["exists"]:
        result["action"], result["reason"] = "create", "no such file"
    elif st["size_bytes"] != wanted:
        result["action"] = "resize" if st["active"] else "rebuild"
        result["reason"] = f"size {human(st['size_bytes'])} -> {human(wanted)}"
    elif not st["active"]:
        problems = []
        if st["holes"]:
            problems.append("it has holes (swapon rejects those)")
        if st["fs_type"] == "btrfs" and not st["nocow"]:
            problems.append("it is copy-on-write on btrfs (swapon rejects those)")
        if not st["header_ok"]:
            problems.append("its swap header does not match its size")
        if problems:
            result["action"], result["reason"] = "rebuild", "; ".join(problems)
        else:
            result["action"], result["reason"] = "activate", "not active"

    changes = result["changes"]
    action = result["action"]
    if action in ("create", "resize", "rebuild"):
        old = human(st["size_bytes"]) if st["exists"] else None
        if action == "rebuild" and st["size_bytes"] == wanted:
            old += f" ({result['reason']})"
        changes["file"] = {"old": old, "new": human(wanted)}
        # the old file (inactive, or swapped off first) is removed before the new one is written
        have = free_bytes + reclaim + (st["allocated_bytes"] if st["exists"] else 0)
        if have < wanted + reserve:
            counted = f" (counting {human_mib(reclaim)} of a leftover temp file)" if reclaim else ""
            errors.append(
                f"size {human(wanted)}: not enough disk space for it at {path}: "
                f"{human_mib(have)} free on {st['mount_point']}{counted}, "
                f"{human_mib(wanted + reserve)} needed "
                f"(the file plus {human_mib(reserve)} kept free); free some space or choose a "
                "smaller size or another file system"
            )
    elif st["exists"] and (st["mode"] != 0o600 or st["uid"] != 0 or st["gid"] != 0):
        changes["mode"] = {"old": f"{st['mode']:04o} {st['uid']}:{st['gid']}", "new": "0600 0:0"}
    if action in ("create", "rebuild", "activate"):
        changes["active"] = {"old": False, "new": True}
    if action == "resize":
        need = st["used_bytes"] + MEMORY_HEADROOM
        if mem_available < need:
            errors.append(
                f"size {human(wanted)}: cannot resize {path} now: "
                f"{human_mib(st['used_bytes'])} of it is in use "
                f"and only {human_mib(mem_available)} of memory is available "
                f"({human_mib(need)} needed to swap it off safely); retry when less is swapped out "
                "(or stop a memory-heavy service first)"
            )
    return result


def human_mib(size):
    """Bytes as MiB with one decimal for messages about space (GiB from 10 GiB on)."""
    if size >= 10 << 30:
        return f"{size / (1 << 30):.1f} GiB"
    return f"{size / (1 << 20):.1f} MiB"


def decide_remove(st, mem_available):
    """
    What removing the swap file described by ``st`` changes (``{active, fstab, file}``, only
    where something changes) and why it would refuse: ``(changes, errors)``.
    """
    path = st["path"]
    changes, errors = {}, []
    if st["exists"] and not st["is_file"]:
        errors.append(f"{path} is not a regular file; it is left alone")
    elif st["exists"] and not st["is_swap"] and not st["active"]:
        errors.append(
            f"{path} is not a swap area (no {SIGNATURE.decode()} signature); it may hold data, "
            "so it is left alone: remove it by hand if it is yours"
        )
    if st["active"]:
        if mem_available < st["used_bytes"] + MEMORY_HEADROOM:
            errors.append(
                f"cannot swap off {path}: {human_mib(st['used_bytes'])} of it is in use and only "
                f"{human_mib(mem_available)} of memory is available; retry when less is swapped out"
            )
        changes["active"] = {"old": True, "new": False}
    if st["fstab_lines"]:
        changes["fstab"] = {"old": st["fstab_lines"], "new": []}
    if st["exists"]:
        changes["file"] = {
            "old": human(st["size_bytes"]) if st["is_file"] else "present",
            "new": None,
        }
    return changes, errors
