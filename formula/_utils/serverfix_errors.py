"""
Salt's error contract in one place: a check that finds several problems raises one
``CommandExecutionError`` whose ``info["errors"]`` lists them; a state shows a person the
message, not the ``Additional info follows`` block Salt appends to ``str()`` when ``info`` is set.

Reached as ``__utils__["serverfix_errors.raise_problems"]`` and friends.
"""

from salt.exceptions import CommandExecutionError


def raise_problems(messages, prefix="", arguments=None):
    """
    Raise ``CommandExecutionError("\\n".join(messages), info={"errors": messages})`` when
    ``messages`` is not empty (``prefix`` goes before the joined message only). ``arguments``,
    when given, says which argument each message is about (``info["arguments"]``), so the
    formula's preflight can name the pillar key behind it.
    """
    messages = list(messages)
    if messages:
        info = {"errors": messages}
        if arguments is not None:
            info["arguments"] = list(arguments)
        raise CommandExecutionError(prefix + "\n".join(messages), info=info)


def message(exc):
    """The message of a ``SaltException`` as its author wrote it (without Salt's info dump)."""
    return getattr(exc, "error", None) or str(exc)


def problems(exc):
    """The list of problems an exception carries: ``info["errors"]``, else its one message."""
    info = getattr(exc, "info", None)
    found = info.get("errors") if isinstance(info, dict) else None
    return list(found) if found else [message(exc)]
