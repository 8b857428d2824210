"""
npm dotenv's reading of a ``.env`` file, in Python: the parser, the value writer and in-place
edits. Pure functions on text (no files); the ``dotenv`` execution module reads and writes the
files and reaches these as ``__utils__["serverfix_dotenv.parse"]`` and friends.

The parser is a faithful port of npm dotenv's ``parse()`` (versions 16.6 to 18.0 behave alike):
its line regular expression with JavaScript's meaning of ``\\s``, ``.``, ``^`` and ``$``,
``String.trim()``, the quote stripping and the ``\\n``/``\\r`` expansion inside double quotes.
python-dotenv disagrees with npm dotenv on many inputs and is deliberately not used.

An edit changes only the value text of the keys it touches: comments, blank lines, order,
``export`` prefixes, inline comments, line endings and every other byte stay. Every planned edit
is re-parsed; if npm dotenv would not read back exactly the wanted values (and every other key
unchanged) it is refused with ``SaltInvocationError`` naming the key, never the value.
"""

import bisect
import re

from salt.exceptions import SaltInvocationError

SECRET = "<secret>"
# npm dotenv's parse() assigns to a plain object: `obj["__proto__"] = value` sets nothing
IGNORED_KEYS = ("__proto__",)

# JavaScript's \s (and String.prototype.trim): Python's \s and str.strip() differ
# (\x1c-\x1f, \x85, \ufeff).
_JS_SPACE_CLASS = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_JS_SPACE_CHARS = (
    "\t\n\v\f\r \u00a0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# JavaScript's line terminators: where ^ and $ match with the m flag, and what . does not match.
_JS_LINE_END = "\n\r\u2028\u2029"
_WS = f"[{_JS_SPACE_CLASS}]"

# npm dotenv's LINE regex, translated term by term:
# /(?:^|^)\s*(?:export\s+)?([\w.-]+)(?:\s*=\s*?|:\s+?)(\s*'(?:\\'|[^'])*'|\s*"(?:\\"|[^"])*"|
#  \s*`(?:\\`|[^`])*`|[^#\r\n]+)?\s*(?:#.*)?(?:$|$)/mg
_LINE_RE = re.compile(
    f"(?<![^{_JS_LINE_END}])"  # ^ (m flag)
    f"{_WS}*(?:export{_WS}+)?"
    r"([A-Za-z0-9_.-]+)"
    f"(?:{_WS}*={_WS}*?|:{_WS}+?)"
    "("
    f"{_WS}*'(?:\\\\'|[^'])*'"
    f'|{_WS}*"(?:\\\\"|[^"])*"'
    f"|{_WS}*`(?:\\\\`|[^`])*`"
    "|[^#\r\n]+"
    ")?"
    f"{_WS}*(?:#[^{_JS_LINE_END}]*)?"
    f"(?![^{_JS_LINE_END}])"  # $ (m flag)
)
# value.replace(/^(['"`])([\s\S]*)\1$/mg, '$2')
_QUOTED_RE = re.compile(f"(?<![^{_JS_LINE_END}])(['\"`])([\\s\\S]*)\\1(?![^{_JS_LINE_END}])")
_CRLF_RE = re.compile("\r\n?")
_SEP_RE = re.compile(f"{_WS}*=|:{_WS}")
_LINE_BREAK_RE = re.compile(f"\r\n|[{_JS_LINE_END}]")
KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# printable, no whitespace, no comment/quote/escape/expansion characters: written without quotes
_PLAIN_UNSAFE = set(_JS_SPACE_CHARS) | set("#'\"`\\$")


# --------------------------------------------------------------------------- parsing


class _Entry:
    """One ``KEY=value`` as npm dotenv sees it, with spans into the original (raw) text."""

    __slots__ = ("key", "value", "token_start", "sep_end", "value_start", "value_end", "raw_end")

    def __init__(self, key, value, token_start, sep_end, value_start, value_end, raw_end):
        self.key = key
        self.value = value
        self.token_start = token_start  # first character of `export` or of the key
        self.sep_end = sep_end  # just after `=` (or `: `)
        self.value_start = value_start  # trimmed value text (quotes included)
        self.value_end = value_end
        self.raw_end = raw_end  # end of the regex's value group (untrimmed)


def _npm_value(raw):
    """The value npm dotenv derives from the matched value text."""
    value = (raw or "").strip(_JS_SPACE_CHARS)
    quote = value[:1]
    value = _QUOTED_RE.sub(r"\2", value)
    if quote == '"':
        value = value.replace("\\n", "\n").replace("\\r", "\r")
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        # bytes that are not UTF-8 (kept by surrogateescape): node decodes them as U+FFFD
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def _entries(text):
    """Every match of npm dotenv's line regex in ``text``, in file order (duplicates included)."""
    normalized = _CRLF_RE.sub("\n", text)
    # npm dotenv first turns CRLF into LF: map offsets in that text back to offsets in `text`
    collapsed = [
        pos - index for index, pos in enumerate(m.start() for m in re.finditer("\r\n", text))
    ]

    def orig(offset):  # each CRLF before `offset` is one character longer in `text`
        return offset + bisect.bisect_left(collapsed, offset)

    entries = []
    for match in _LINE_RE.finditer(normalized):
        whole = match.group(0)
        token = match.start() + len(whole) - len(whole.lstrip(_JS_SPACE_CHARS))
        sep_end = _SEP_RE.match(normalized, match.end(1)).end()
        raw = match.group(2) or ""
        raw_start, raw_end = match.span(2) if match.group(2) is not None else (sep_end, sep_end)
        stripped = raw.strip(_JS_SPACE_CHARS)
        if stripped:
            value_start = raw_start + len(raw) - len(raw.lstrip(_JS_SPACE_CHARS))
            value_end = value_start + len(stripped)
        else:
            value_start = value_end = raw_end
        entries.append(
            _Entry(
                match.group(1),
                _npm_value(match.group(2)),
                orig(token),
                orig(sep_end),
                orig(value_start),
                orig(value_end),
                orig(raw_end),
            )
        )
    return entries


def _decode(data):
    # surrogateescape keeps bytes that are not UTF-8 so an edit writes them back unchanged
    return data.decode("utf-8", "surrogateescape")


def parse(text):
    """
    Parse ``.env`` text exactly as npm dotenv's ``parse()`` does and return ``{key: value}``.

    Duplicated keys: the last one wins. Unquoted ``#`` starts a comment; no backslash escapes
    except ``\\n``/``\\r`` inside double quotes; ``${VAR}`` is literal.

    text
        The file's content (str or bytes).
    """
    if isinstance(text, (bytes, bytearray)):
        text = _decode(bytes(text))
    result = {}
    for entry in _entries(str(text)):
        if entry.key not in IGNORED_KEYS:
            result[entry.key] = entry.value
    return result


# --------------------------------------------------------------------------- writing values


def _to_text(key, value):
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise SaltInvocationError(
            f"{key}: the value must be a string or a number, not {type(value).__name__}"
            + (" (write 'true'/'false' as a quoted string)" if isinstance(value, bool) else "")
        )
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SaltInvocationError(
            f"{key}: the value is not valid text (it cannot be written as UTF-8)"
        ) from None
    return text


def _candidates(value):
    """Ways to write ``value`` that npm dotenv reads back exactly, best first (each re-checked)."""
    if value == "":
        return ["''"]
    forms = []
    ends_with_backslash = value.endswith("\\")
    double_quoted = '"' + value.replace("\n", "\\n").replace("\r", "\\r") + '"'
    if value.isprintable() and not set(value) & _PLAIN_UNSAFE:
        forms.append(value)
    if "'" not in value and "\r" not in value and not ends_with_backslash:
        forms.append(f"'{value}'")
    if '"' not in value and "\\n" not in value and "\\r" not in value and not ends_with_backslash:
        forms.append(double_quoted)
    if "`" not in value and "\r" not in value and not ends_with_backslash:
        forms.append(f"`{value}`")
    # unquoted with quotes, `$` or a trailing backslash inside: npm dotenv keeps such text literally
    one_line = "#" not in value and not set(value) & set(_JS_LINE_END)
    if one_line and value[0] not in "'\"`" and value == value.strip(_JS_SPACE_CHARS):
        forms.append(value)
    # quotes that also occur inside: the quoted pattern fails, the whole unquoted text is taken
    # and npm dotenv still strips the outer pair (and expands \n, \r after a double quote)
    if (
        "#" not in value
        and "\\n" not in value
        and "\\r" not in value
        and not set(value) & set("\u2028\u2029")
    ):
        forms.append(double_quoted)
    if one_line:
        forms += [f"'{value}'", f"`{value}`"]
    return list(dict.fromkeys(forms))


def _no_encoding_error(key, value):
    if "\r" in value:
        reason = (
            "it contains a carriage return, which only a double-quoted \\r can hold, "
            "together with a literal "
            "\\n or \\r sequence or with both '#' and '\"'"
        )
    else:
        reason = (
            "no quoting style holds this mix of quotes (' \" `), '#', line breaks "
            "and a trailing backslash"
        )
    return SaltInvocationError(
        f"{key}: cannot write this value so that npm dotenv reads it back exactly: "
        f"{reason}; nothing was changed"
    )


def render(value, key="VALUE"):
    """
    Return the text to write after ``KEY=`` so that npm dotenv reads back exactly ``value``.

    Unquoted when it is plain; else single quotes, double quotes (line breaks as ``\\n``) or
    backticks, whichever holds it exactly. Raises an error naming ``key`` (never the value)
    when no form can hold it, e.g. a carriage return together with a literal ``\\n``.
    """
    text = _to_text(key, value)
    for candidate in _candidates(text):
        if parse(f"{key}={candidate}\n").get(key) == text:
            return candidate
    raise _no_encoding_error(key, text)


def _line_ending(text):
    first = re.search("\r\n|\r|\n", text)
    return first.group(0) if first else "\n"


def _format(candidate, newline):
    # a raw line break inside quotes follows the file's style (npm dotenv reads any style as \n)
    return candidate.replace("\n", newline) if newline != "\n" else candidate


def _set_one(text, key, value, expected):
    """``text`` with every occurrence of ``key`` set (or the key appended); re-parsed to check."""
    occurrences = [e for e in _entries(text) if e.key == key]
    newline = _line_ending(text)
    disturbed = None  # keys a rejected form would have changed (names only)
    for candidate in _candidates(value):
        written = _format(candidate, newline)
        if occurrences:
            new = text
            for entry in reversed(occurrences):
                if entry.value == value:
                    continue  # already right: keep its quoting
                start = entry.value_start
                if re.search(f"[{_JS_LINE_END}]", text[entry.sep_end : entry.value_start]):
                    start = entry.sep_end  # the value sat on a later line: bring it next to `=`
                new = new[:start] + written + new[entry.value_end :]
        else:
            tail = "" if not text or text.endswith(("\n", "\r")) else newline
            new = f"{text}{tail}{key}={written}{newline}"
        got = parse(new)
        if got == expected:
            return new
        if disturbed is None:
            disturbed = sorted(
                k for k in set(got) | set(expected) if k != key and got.get(k) != expected.get(k)
            )
    if disturbed is not None:
        raise SaltInvocationError(
            f"{key}: cannot write the value here without changing how npm dotenv reads "
            f"{', '.join(disturbed) or key} (an unterminated quote in the file?); "
            "fix the quoting there by hand; "
            "nothing was changed"
        )
    raise _no_encoding_error(key, value)


def _unset_one(text, key, expected):
    """``text`` without any line of ``key`` (an inline comment on it goes too)."""
    new = text
    for entry in reversed([e for e in _entries(text) if e.key == key]):
        start = entry.token_start
        while start > 0 and new[start - 1] in " \t":
            start -= 1
        if start > 0 and new[start - 1] not in _JS_LINE_END:
            start = entry.token_start
        end = max(entry.value_end, entry.raw_end, entry.sep_end)
        line_end = _LINE_BREAK_RE.search(new, end)
        end = line_end.end() if line_end else len(new)
        new = new[:start] + new[end:]
    if parse(new) != expected:
        raise SaltInvocationError(
            f"{key}: cannot remove it without changing how npm dotenv reads other keys "
            "(an unterminated quote nearby?); fix the file by hand; nothing was changed"
        )
    return new


def _check_key(key):
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise SaltInvocationError(
            f"{key!r} is not a valid .env key: use letters, digits, '_', '.' and '-' only "
            "(npm dotenv silently ignores other keys)"
        )
    if key in IGNORED_KEYS:
        raise SaltInvocationError(
            f"{key!r} cannot be a .env key: npm dotenv ignores it (it is the JavaScript "
            "object's prototype); use another name; nothing was changed"
        )


def _hidden(_key, value):
    """The default of :func:`edit`'s ``show``: nothing but an empty value is shown."""
    return value if value in (None, "") else SECRET


def edit(text, values=None, remove=(), show=None):
    """
    Plan an edit of ``.env`` text without touching any file.

    Returns ``{"text": new_text, "added": [...], "changed": [...], "removed": [...],
    "values": {key: {"old", "new"}}}`` where each value is what ``show(key, value)`` returns
    (the caller's masking rule, ``_utils/serverfix_mask.value``; by default every non-empty
    value is ``<secret>``; a missing old value is ``None``).
    Keys whose parsed value already matches are left alone (no rewrite of their quoting).

    text
        The current content (str or bytes); ``''`` for a new file.
    values
        Mapping of keys to wanted values (strings or numbers).
    remove
        Keys that must not be in the file.
    """
    if isinstance(text, (bytes, bytearray)):
        text = _decode(bytes(text))
    show = show or _hidden
    values = dict(values or {})
    remove = list(remove or [])
    for key in list(values) + remove:
        _check_key(key)
    clash = sorted(set(values) & set(remove))
    if clash:
        raise SaltInvocationError(
            f"{', '.join(clash)}: asked to both set and remove; nothing was changed"
        )
    wanted = {key: _to_text(key, value) for key, value in values.items()}
    current = parse(text)
    plan = {"added": [], "changed": [], "removed": [], "values": {}}
    expected = dict(current)
    for key, value in wanted.items():
        if current.get(key) == value:
            continue
        expected[key] = value
        text = _set_one(text, key, value, expected)
        plan["changed" if key in current else "added"].append(key)
        plan["values"][key] = {"old": show(key, current.get(key)), "new": show(key, value)}
    for key in remove:
        if key not in current:
            continue
        del expected[key]
        text = _unset_one(text, key, expected)
        plan["removed"].append(key)
    plan["text"] = text
    return plan
