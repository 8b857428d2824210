"""
dotenv states: keys of a ``.env`` file (read by npm dotenv) present with given values, or absent.

Thin over the ``dotenv`` execution module, which edits in place (every unrelated byte kept),
writes atomically with the file's mode and owner, backs up first, and re-parses every edit the
way npm dotenv does before writing it. Comments and logs name keys only; changes show a value
only for ``public_keys`` (default: the formula's non-secret keys REDIS_HOST, REDIS_PORT,
REDIS_DB, QUEUE_ENABLED, QUEUE_CONCURRENCY), ``''`` for an empty one, else ``<secret>``
(the project's one rule, ``_utils/serverfix_mask.py``). A refusal of
the module (``SaltException``) becomes ``result: False`` with its message and no changes.
"""

from typing import TYPE_CHECKING, Any

from salt.exceptions import SaltException

if TYPE_CHECKING:
    __salt__: dict[str, Any]
    __utils__: dict[str, Any]
    __opts__: dict[str, Any]
    __pillar__: dict[str, Any]

__virtualname__ = "dotenv"

# the execution module's default (dotenv.BACKUP_DIR): backups outside any app directory
BACKUP_DIR = "/var/backups/serverfix"


def __virtual__():
    if "dotenv.plan" in __salt__:
        return __virtualname__
    return (
        False,
        "the dotenv execution module is not loaded: run saltutil.sync_all, "
        "or state.apply serverfix sync_mods=all",
    )


_VERBS = (
    ("created", "create the file", "created the file"),
    ("added", "add", "added"),
    ("changed", "change", "changed"),
    ("removed", "remove", "removed"),
)


def _describe(changes, test):
    """Key names only: never a value."""
    parts = []
    for field, future, past in _VERBS:
        if changes.get(field):
            names = "" if field == "created" else " " + ", ".join(changes[field])
            parts.append(f"{future if test else past}{names}")
    return ("would " if test else "") + "; ".join(parts)


def _refused(ret, exc):
    message = __utils__["serverfix_errors.message"](exc)
    ret["changes"] = {}
    ret["result"] = False
    ret["comment"] = (
        message if message.endswith("nothing was changed") else f"{message}; nothing was changed"
    )
    return ret


def _where(name, kwargs):
    """Where the backup of ``name`` goes, in words (nothing is created)."""
    backup_dir = kwargs.get("backup_dir", BACKUP_DIR)
    return f"in {__utils__['serverfix_files.backup_location'](name, backup_dir)}"


def _run(name, ret, plan_kwargs, apply_func, apply_kwargs):
    salt = __salt__
    try:
        changes = salt["dotenv.plan"](name, **plan_kwargs)
    except SaltException as exc:
        return _refused(ret, exc)
    if not changes:
        ret["comment"] = f"{name} already has the wanted keys and values."
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = changes
        backup_note = (
            "" if changes.get("created") else f" (after a backup {_where(name, plan_kwargs)})"
        )
        ret["comment"] = f"{name}: {_describe(changes, True)}{backup_note}."
        return ret
    try:
        changes = salt[apply_func](name, **apply_kwargs)
    except SaltException as exc:
        return _refused(ret, exc)
    ret["changes"] = changes
    backup_note = f" (backup: {changes['backup']})" if changes.get("backup") else ""
    ret["comment"] = f"{name}: {_describe(changes, False)}{backup_note}."
    return ret


def present(
    name,
    values,
    secret_keys=None,
    create=False,
    user="",
    group="",
    mode="0640",
    backup_keep=5,
    public_keys=None,
    backup_dir=BACKUP_DIR,
):
    """
    Ensure the ``.env`` file ``name`` has each key of ``values`` with exactly that value as npm
    dotenv reads it (numbers are written as their text). Only the value text of keys that differ
    is rewritten (every occurrence of a duplicated key); missing keys are appended; comments,
    order, ``export``, inline comments and line endings stay. A symlink's target is edited.

    values
        Mapping of keys to strings or numbers. A value given as ``{"pillar": "<key>"}`` is read
        from the pillar when the state runs (keeps a secret out of the compiled state data).
    secret_keys
        Keys whose values must never be shown, even when in ``public_keys``.
    public_keys
        The only keys whose values may be shown in changes (URL passwords masked); default
        REDIS_HOST, REDIS_PORT, REDIS_DB, QUEUE_ENABLED, QUEUE_CONCURRENCY. Any other value
        (an existing one read from the file too) is ``<secret>``.
    create
        Create the file when it is missing (with ``mode``, ``user``, ``group``); otherwise a
        missing file is an error.
    user, group, mode
        Owner and mode of a file this state creates (``''``: root). An existing file keeps its
        own owner, group and mode.
    backup_keep
        How many timestamped backups (``<file>.serverfix-<time>.bak``, mode 0600) to keep.
    backup_dir
        Where the backups go: the file's path mirrored below it (default
        ``/var/backups/serverfix``, e.g. ``/var/backups/serverfix/var/www/app/.env.serverfix-
        <time>.bak``, created 0700); ``''`` puts them next to the file.

    .. code-block:: yaml

        /var/www/intranet/backend/.env:
          dotenv.present:
            - values:
                REDIS_HOST: 127.0.0.1
                REDIS_PORT: 6379
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if not isinstance(values, dict):
        ret["result"] = False
        ret["comment"] = (
            f"{name}: values must be a mapping of keys to strings or numbers; nothing was changed"
        )
        return ret
    values = {
        key: __utils__["serverfix_pillar.resolve"](value, __pillar__)
        for key, value in values.items()
    }
    plan_kwargs = {
        "values": values,
        "secret_keys": list(secret_keys or []),
        "create": create,
        "user": user,
        "group": group,
        "mode": mode,
        "backup_keep": backup_keep,
        "public_keys": None if public_keys is None else list(public_keys),
        "backup_dir": backup_dir,
    }
    return _run(name, ret, plan_kwargs, "dotenv.set", plan_kwargs)


def absent(name, keys, backup_keep=5, backup_dir=BACKUP_DIR):
    """
    Ensure none of ``keys`` is in the ``.env`` file ``name`` (every occurrence goes, with an
    inline comment on its line). A missing file has no keys: nothing to do. The backup goes
    below ``backup_dir`` as for :func:`present`.

    .. code-block:: yaml

        /var/www/intranet/backend/.env:
          dotenv.absent:
            - keys: [OLD_QUEUE_URL]
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if isinstance(keys, str):
        keys = [keys]
    salt = __salt__
    if not salt["file.file_exists"](name) and not salt["file.is_link"](name):
        ret["comment"] = f"{name} does not exist, so none of the keys is in it."
        return ret
    return _run(
        name,
        ret,
        {"remove": list(keys), "backup_keep": backup_keep, "backup_dir": backup_dir},
        "dotenv.unset",
        {"keys": list(keys), "backup_keep": backup_keep, "backup_dir": backup_dir},
    )
