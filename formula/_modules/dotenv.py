"""
dotenv: read and edit ``.env`` files exactly as npm ``dotenv`` (the backend's reader) parses them.

The parser, the value writer and the in-place edit live in ``_utils/serverfix_dotenv.py`` (pure,
on text); this module reads and writes the files: it checks them first (:func:`preflight`),
backs up, writes atomically with the file's mode and owner, and refuses an edit npm dotenv would
not read back exactly (every other key unchanged).

Values are never put into messages or logs. Change reports follow the project's one masking
rule (``_utils/serverfix_mask.py``): only the values of ``public_keys`` (by default the formula's
own non-secret keys REDIS_HOST, REDIS_PORT, REDIS_DB, QUEUE_ENABLED, QUEUE_CONCURRENCY) not listed
in ``secret_keys`` are shown, URL passwords masked; every other value is ``<secret>``, an empty
one is shown as ``''``.

Errors follow Salt's contract: bad arguments raise ``SaltInvocationError``, a file that cannot
be edited ``CommandExecutionError`` (:func:`preflight`: one, with every problem in
``info["errors"]``). Messages name the path or the argument and the fix. Standard library and
salt only: this runs inside the minion's own Python.
"""

import grp
import logging
import os
import pwd
import re
import stat
from typing import TYPE_CHECKING, Any

from salt.exceptions import CommandExecutionError, SaltInvocationError

if TYPE_CHECKING:
    __utils__: dict[str, Any]

log = logging.getLogger(__name__)

__virtualname__ = "dotenv"
__func_alias__ = {"set_": "set"}

BACKUP_TAG = "serverfix"
# where backups go unless ``backup_dir`` says otherwise: outside any app directory, so a
# backup of a .env is never committed (a .gitignore listing `.env` misses it) or served
BACKUP_DIR = "/var/backups/serverfix"


def __virtual__():
    return __virtualname__


def _text(name):
    """The pure ``.env`` text function ``name`` of ``_utils/serverfix_dotenv.py``."""
    return __utils__[f"serverfix_dotenv.{name}"]


# --------------------------------------------------------------------------- text


def parse(text):
    """
    Parse ``.env`` text exactly as npm dotenv's ``parse()`` does and return ``{key: value}``.

    Duplicated keys: the last one wins. Unquoted ``#`` starts a comment; no backslash escapes
    except ``\\n``/``\\r`` inside double quotes; ``${VAR}`` is literal.

    text
        The file's content (str or bytes).

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.parse 'A="x y" # comment'
    """
    return _text("parse")(text)


def is_secret(key, secret_keys=(), public_keys=None):
    """
    True when the value of ``key`` must never be shown: it is not one of ``public_keys``
    (default: the formula's own non-secret keys REDIS_HOST, REDIS_PORT, REDIS_DB, QUEUE_ENABLED,
    QUEUE_CONCURRENCY), or it is listed in ``secret_keys``. Every other key's value is possibly
    secret (``_utils/serverfix_mask.py``).

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.is_secret SMTP_PASS
    """
    return not __utils__["serverfix_mask.is_public"](key, public_keys, secret_keys)


def _show(public_keys, secret_keys):
    """The masking rule for change reports: ``show(key, value)``."""
    rule = __utils__["serverfix_mask.value"]

    def show(key, value):
        return rule(key, value, public_keys, secret_keys)

    return show


def render(value, key="VALUE"):
    """
    Return the text to write after ``KEY=`` so that npm dotenv reads back exactly ``value``.

    Unquoted when it is plain; else single quotes, double quotes (line breaks as ``\\n``) or
    backticks, whichever holds it exactly. Raises ``SaltInvocationError`` naming ``key`` (never
    the value) when no form can hold it, e.g. a carriage return together with a literal ``\\n``.

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.render 'p@ss word#1'
    """
    return _text("render")(value, key)


def edit(text, values=None, remove=(), secret_keys=(), public_keys=None):
    """
    Plan an edit of ``.env`` text without touching any file.

    Returns ``{"text": new_text, "added": [...], "changed": [...], "removed": [...],
    "values": {...}}``
    where ``values`` shows old/new of the keys in ``public_keys`` (see :func:`is_secret`),
    ``''`` for an empty value and ``<secret>`` for any other.
    Keys whose parsed value already matches are left alone (no rewrite of their quoting).
    Raises ``SaltInvocationError`` naming the key for a bad key or value.

    text
        The current content (str or bytes); ``''`` for a new file.
    values
        Mapping of keys to wanted values (strings or numbers).
    remove
        Keys that must not be in the file.

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.edit 'A=1' values='{"A": 2, "B": "x y"}'
    """
    return _text("edit")(text, values, remove, _show(public_keys, secret_keys))


# --------------------------------------------------------------------------- files


def _read_bytes(path):
    target = os.path.realpath(path)
    try:
        with open(target, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CommandExecutionError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CommandExecutionError(f"{path}: is a directory, not a .env file") from None
    except OSError as exc:
        raise CommandExecutionError(f"{path}: cannot read it ({exc.strerror})") from None


def read(path):
    """
    Read the ``.env`` file at ``path`` and return ``{key: value}`` exactly as npm dotenv parses it
    (last duplicate wins). A symlink is followed.

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.read /var/www/intranet/backend/.env
    """
    return _text("parse")(_read_bytes(path))


def get(path, key, default=None):
    """
    Return the value npm dotenv reads for ``key`` from the file at ``path``, or ``default``.

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.get /var/www/intranet/backend/.env REDIS_HOST
    """
    return read(path).get(key, default)


def keys(path):
    """
    Return the keys of the file at ``path`` in file order (each once), without their values.

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.keys /var/www/intranet/backend/.env
    """
    return list(read(path))


def _owner_ids(path, user, group):
    """uid/gid to apply (None = keep); errors name the argument and the fix."""
    uid = gid = None
    if user:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            raise SaltInvocationError(
                f"{path}: user {user!r} does not exist on this host; "
                "create it first, or pass user='' for root"
            ) from None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise SaltInvocationError(
                f"{path}: group {group!r} does not exist on this host; "
                "create it first, or pass group='' for root"
            ) from None
    return uid, gid


def _parse_mode(mode):
    text = str(mode).strip()
    if not re.match(r"^0?[0-7]{3}$", text):
        raise SaltInvocationError(f"mode {mode!r} is not an octal file mode such as '0640'")
    return int(text, 8)


def _check_keep(keep):
    if isinstance(keep, bool) or not str(keep).strip().isdigit() or int(keep) < 1:
        raise SaltInvocationError(f"backup_keep {keep!r} is not a whole number of at least 1")


def preflight(path, create=False):
    """
    Read-only checks before an edit changes anything: the file (or the symlink's target) must be
    a readable, writable regular file in a writable directory, or, when it is missing, ``create``
    must be true and its directory must exist and be writable.

    Returns True when the file can be edited; else raises one ``CommandExecutionError`` with
    every problem in ``info["errors"]``, each naming the path and the fix.

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.preflight /var/www/intranet/backend/.env
    """
    __utils__["serverfix_errors.raise_problems"](_problems(path, create))
    return True


def _problems(path, create):
    """What stops an edit of the file at ``path`` (see :func:`preflight`): a list of messages."""
    if not isinstance(path, str) or not path.startswith("/"):
        return [f"path {path!r} is not an absolute path; give the .env file's full path"]
    target = os.path.realpath(path)
    shown = path if target == path else f"{path} (-> {target})"
    directory = os.path.dirname(target)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        if os.path.islink(path):
            return [
                f"{shown}: the symlink points to a missing file; fix the link or give the path "
                "of the real .env"
            ]
        if not create:
            return [
                f"{path}: no such file; give the path of the backend's .env, or create=True "
                "to create it"
            ]
        if not os.path.isdir(directory):
            return [
                f"{path}: cannot be created: directory {directory} does not exist; create it first"
            ]
        if not os.access(directory, os.W_OK | os.X_OK):
            return [f"{path}: cannot be created: directory {directory} is not writable"]
        return []
    except OSError as exc:
        return [
            f"{shown}: cannot check it ({exc.strerror}); "
            "fix the path or its directory's permissions"
        ]
    errors = []
    if not stat.S_ISREG(st.st_mode):
        return [f"{shown}: is not a regular file; give the path of the .env file"]
    # root is refused writing only by a read-only file system or the immutable attribute
    why = (
        "read-only file system or immutable: check `lsattr`, `chattr -i`"
        if os.geteuid() == 0
        else f"permission denied for uid {os.geteuid()}: run as root"
    )
    if not os.access(target, os.R_OK):
        errors.append(f"{shown}: is not readable; fix its permissions")
    if not os.access(target, os.W_OK):
        errors.append(f"{shown}: is not writable ({why}); make it writable first")
    if not os.access(directory, os.W_OK | os.X_OK):
        errors.append(
            f"{shown}: its directory {directory} is not writable ({why}); the edit writes a "
            "temp file there"
        )
    return errors


def backup(path, keep=5, backup_dir=BACKUP_DIR):
    """
    Copy the file at ``path`` to ``<backup_dir><file>.serverfix-<UTC time>.bak`` (the file's
    path mirrored below ``backup_dir``, default ``/var/backups/serverfix``, created 0700 when
    missing; ``''``: next to the file) with mode 0600 and the file's owner, ACLs and extended
    attributes, and keep only the newest ``keep`` backups there. Returns the backup's path.

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.backup /var/www/intranet/backend/.env keep=5
    """
    make_backup = __utils__["serverfix_files.backup"]
    return make_backup(path, keep=int(keep), tag=BACKUP_TAG, backup_dir=backup_dir)


def _load(path, create):
    """(content bytes, stat) of the file, or (b'', None) when it is missing and may be created."""
    problems = _problems(path, create)
    if problems:
        raise CommandExecutionError(
            "; ".join(problems) + "; nothing was changed", info={"errors": problems}
        )
    target = os.path.realpath(path)
    if not os.path.exists(target):
        return b"", None
    return _read_bytes(path), os.stat(target)


def plan(
    path,
    values=None,
    remove=(),
    secret_keys=(),
    create=False,
    user="",
    group="",
    mode="0640",
    backup_keep=5,
    public_keys=None,
    backup_dir=BACKUP_DIR,
):
    """
    What :func:`set` / :func:`unset` would change in the file at ``path``, without changing it.

    Returns ``{"added", "changed", "removed", "values", "created"?}``: values as
    :func:`edit` shows them (only ``public_keys`` values, see :func:`is_secret`). Raises an
    error naming the key or path for any bad input. ``backup_dir`` (where :func:`set` would
    put its backup) is accepted for the same arguments as :func:`set`; nothing is created.

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.plan /var/www/intranet/backend/.env values='{"REDIS_HOST": "127.0.0.1"}'
    """
    __utils__["serverfix_files.check_backup_dir"](backup_dir)  # nothing is created by a plan
    result, _ = _plan(
        path, values, remove, secret_keys, create, user, group, mode, backup_keep, public_keys
    )
    return result


def _plan(path, values, remove, secret_keys, create, user, group, mode, backup_keep, public_keys):
    _parse_mode(mode)
    _check_keep(backup_keep)
    data, st = _load(path, create)
    # owner and mode are only for a new file: an existing .env keeps its own
    uid, gid = _owner_ids(path, user, group) if st is None else (None, None)
    edited = _text("edit")(data, values, remove, _show(public_keys, secret_keys))
    new_data = edited.pop("text").encode("utf-8", "surrogateescape")
    changes = dict(edited)
    if st is None:
        changes["created"] = True
    if not any(changes.get(field) for field in ("added", "changed", "removed", "created")):
        changes = {}
    return changes, (data, new_data, st, uid, gid)


def _apply(
    path,
    values,
    remove,
    secret_keys,
    create,
    user,
    group,
    mode,
    backup_keep,
    public_keys,
    backup_dir,
):
    __utils__["serverfix_files.check_backup_dir"](backup_dir)
    changes, (data, new_data, st, uid, gid) = _plan(
        path, values, remove, secret_keys, create, user, group, mode, backup_keep, public_keys
    )
    if not changes:
        return {}
    target = os.path.realpath(path)
    if st is None:
        try:
            __utils__["serverfix_files.atomic_write"](
                target, new_data, mode=_parse_mode(mode), uid=uid, gid=gid
            )
        except OSError as exc:
            raise CommandExecutionError(
                f"{path}: cannot create it ({exc.strerror}); nothing was changed"
            ) from None
        log.info("dotenv: created %s with keys %s", target, ", ".join(changes["added"]))
        return changes
    if _read_bytes(path) != data:
        raise CommandExecutionError(
            f"{path}: changed by something else while being edited; nothing was changed, run again"
        )
    try:
        changes["backup"] = backup(path, keep=backup_keep, backup_dir=backup_dir)
    except OSError as exc:
        where = backup_dir or "next to it"
        raise CommandExecutionError(
            f"{path}: cannot make the backup ({where}: {exc.strerror}); nothing was changed"
        ) from None
    try:
        __utils__["serverfix_files.atomic_write"](target, new_data)
    except OSError as exc:
        raise CommandExecutionError(
            f"{path}: cannot write it ({exc.strerror}); the file is unchanged "
            f"(backup {changes['backup']})"
        ) from None
    log.info(
        "dotenv: %s: added %s, changed %s, removed %s (backup %s)",
        target,
        changes["added"],
        changes["changed"],
        changes["removed"],
        changes["backup"],
    )
    return changes


def set_(
    path,
    values,
    secret_keys=(),
    create=False,
    user="",
    group="",
    mode="0640",
    backup_keep=5,
    public_keys=None,
    backup_dir=BACKUP_DIR,
):
    """
    Set keys in the ``.env`` at ``path`` in place and return what changed (values as
    :func:`plan` shows them).

    Every occurrence of a duplicated key is updated; missing keys are appended. Before the first
    change a backup is made (mode 0600, newest ``backup_keep`` kept) below ``backup_dir``
    (default ``/var/backups/serverfix``, the file's path mirrored; ``''``: next to the file,
    see :func:`backup`); the file is replaced
    atomically with its own mode and owner. A missing file is only created with ``create=True``,
    with ``mode`` and ``user``/``group`` (``''``: root).

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.set /srv/backend/.env '{"REDIS_HOST": "127.0.0.1", "REDIS_PORT": 6379}'
    """
    return _apply(
        path,
        values,
        (),
        secret_keys,
        create,
        user,
        group,
        mode,
        backup_keep,
        public_keys,
        backup_dir,
    )


def unset(path, keys, backup_keep=5, backup_dir=BACKUP_DIR):  # pylint: disable=redefined-outer-name
    """
    Remove keys (every occurrence, with an inline comment on the same line) from the ``.env`` at
    ``path``; returns what changed. A backup is made first (below ``backup_dir``, as for
    :func:`set`).

    CLI Example:

    .. code-block:: bash

        salt '*' dotenv.unset /var/www/intranet/backend/.env '["OLD_KEY"]'
    """
    if isinstance(keys, str):
        keys = [keys]
    return _apply(path, {}, list(keys), (), False, "", "", "0640", backup_keep, None, backup_dir)
