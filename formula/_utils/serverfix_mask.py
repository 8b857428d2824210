"""
The one masking rule of the project: what of a ``.env`` value, a log line or any other text may
be shown. Used by the dotenv and pm2 modules, their states and diagnose/verify; reached as
``__utils__["serverfix_mask.<function>"]``. Pure functions, standard library only.

1. A ``.env`` value is shown only when its key is one the formula writes itself and that is not
   secret (:data:`PUBLIC_ENV_KEYS`, or the ``public_keys`` a caller passes) and the key is not
   listed in ``secret_keys``. Every other value (every ``dotenv:extra`` value, every value
   already in the file under another key, ``REDIS_PASSWORD``) is ``<secret>``. An empty value is
   shown as empty: it hides nothing, and ``'' -> <secret>`` says that a password gets set.
2. Credentials inside URLs are masked in every text shown, shown values included:
   ``scheme://user:pass@host`` -> ``scheme://user:<secret>@host``, ``redis://:pass@host`` ->
   ``redis://:<secret>@host`` (a password holding ``@`` is masked up to the last ``@``).
3. Log lines and messages (:func:`text`): the given secret values (4+ characters) and anything
   after ``password=``/``token:``-like words are masked too, besides rule 2.
"""

import re

SECRET = "<secret>"
# the .env keys the formula defines itself whose values are not secret (defaults.yaml's
# managed_env without REDIS_PASSWORD): the only values ever shown
PUBLIC_ENV_KEYS = ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "QUEUE_ENABLED", "QUEUE_CONCURRENCY")
# names of environment keys whose values are secret, for environments the formula did not write
# (pm2's saved app environment, which also holds PATH, HOME, ...)
SECRET_NAME_RE = re.compile(
    r"PASS|SECRET|TOKEN|KEY|AUTH|CREDENTIAL|PRIVATE|COOKIE|SESSION|SALT",
    re.IGNORECASE,
)
SECRET_ASSIGN_RE = re.compile(
    r"((?:password|passwd|pass|pwd|secret|token|api[_-]?key)\w*[\"']?\s*[=:]\s*[\"']?)"
    r"(?!<secret>)([^\s\"']+)",
    re.IGNORECASE,
)
# scheme://[user]:password@ - the password runs to the last '@' of the token (it may hold '@')
URL_CREDENTIALS_RE = re.compile(
    r"(\b[a-z][a-z0-9+.-]*://[^/\s:@\"'<>]*:)(?!<secret>@)(\S+)@", re.IGNORECASE
)
MIN_SECRET_LENGTH = 4  # shorter values ("1", "yes") would mask unrelated text


def urls(shown):
    """``shown`` with the password of every URL in it replaced by ``<secret>``."""
    if not isinstance(shown, str) or "://" not in shown:
        return shown
    return URL_CREDENTIALS_RE.sub(lambda m: m.group(1) + SECRET + "@", shown)


def is_public(key, public_keys=None, secret_keys=()):
    """True when the value of ``.env`` key ``key`` may be shown (rule 1): ``key`` is in
    ``public_keys`` (default :data:`PUBLIC_ENV_KEYS`) and not in ``secret_keys``."""
    public = PUBLIC_ENV_KEYS if public_keys is None else public_keys
    return key in public and key not in (secret_keys or ())


def value(key, shown, public_keys=None, secret_keys=()):
    """What may be shown of the value ``shown`` of ``.env`` key ``key``: ``None`` (no value) and
    ``''`` as they are, the value (URL passwords masked) of a public key, else ``<secret>``."""
    if shown is None or shown == "":
        return shown
    if is_public(key, public_keys, secret_keys):
        return urls(str(shown))
    return SECRET


def hidden_values(env, public_keys=None, secret_keys=()):
    """The values of the mapping ``env`` (a ``.env`` read) that must not be shown, to mask in log
    lines: every non-public value of 4+ characters, except one a public key shows anyway."""
    env = env or {}
    shown = {str(v) for k, v in env.items() if is_public(k, public_keys, secret_keys)}
    return {
        str(v)
        for k, v in env.items()
        if not is_public(k, public_keys, secret_keys)
        and v is not None
        and len(str(v)) >= MIN_SECRET_LENGTH
        and str(v) not in shown
    }


def secret_name(key):
    """True when an environment key's name says its value is secret (for pm2's app envs)."""
    return bool(SECRET_NAME_RE.search(str(key)))


def env_secrets(env):
    """Values of secret-named keys of an app's environment (memory only, for masking); pm2 nests
    the ecosystem file's ``env`` block under the app's name, so nested blocks count."""
    found = set()
    for key, item in (env or {}).items():
        if isinstance(item, dict):
            found |= env_secrets(item)
        elif secret_name(key) and isinstance(item, (str, int)) and not isinstance(item, bool):
            found.add(str(item))
    return found


def text(line, secrets=()):
    """``line`` (any text shown: a log line, a message) with the given ``secrets`` values (4+
    characters, longest first), anything after ``password=``/``token:``-like words and URL
    passwords replaced by ``<secret>``."""
    if not isinstance(line, str):
        return line
    found = {str(s) for s in secrets or () if s is not None and len(str(s)) >= MIN_SECRET_LENGTH}
    for secret in sorted(found, key=len, reverse=True):
        line = line.replace(secret, SECRET)
    line = SECRET_ASSIGN_RE.sub(lambda m: m.group(1) + SECRET, line)
    return urls(line)


def scrub(data, secrets=()):
    """:func:`text` over every string anywhere in ``data`` (dicts, lists): the last line of
    defence over a whole report. Known ``secrets`` of any length but 1-2 characters are masked."""
    if isinstance(data, dict):
        return {key: scrub(item, secrets) for key, item in data.items()}
    if isinstance(data, (list, tuple)):
        return [scrub(item, secrets) for item in data]
    if isinstance(data, str):
        for secret in sorted({str(s) for s in secrets or () if s}, key=len, reverse=True):
            if len(secret) >= 3:
                data = data.replace(secret, SECRET)
        return urls(data)
    return data
