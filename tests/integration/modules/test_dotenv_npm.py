"""
The dotenv module against the real reader: npm dotenv (tests/node/node_modules/dotenv, run by node).

- the recorded vectors still hold for the installed npm dotenv;
- the Python parser gives npm dotenv's exact result on thousands of generated awkward files;
- round trip: awkward generated values written into generated files (comments, CRLF, duplicates,
  ``export``, inline comments, multi-line and unterminated quotes) read back exactly with npm
  dotenv, and every other key keeps its value; a value the writer refuses is refused with a
  message that does not contain it.

The figures are printed:
``pytest tests/integration/modules/test_dotenv_npm.py -q -rP | grep -E '^(parser|round trip):'``.
"""

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from salt.exceptions import SaltInvocationError

from tests.support.loader import import_salt_module
from tests.support.paths import REPO, UTILS_DIR

# the parser, writer and edit (pure text functions) that the dotenv module calls
dotenv = import_salt_module(UTILS_DIR / "serverfix_dotenv.py", "serverfix_npm_dotenv")
VECTORS = json.loads((REPO / "tests" / "data" / "dotenv-vectors.json").read_text(encoding="utf-8"))[
    "cases"
]
# one node round trip per hypothesis example, each carrying a batch of cases
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# the characters and sequences that break naive .env writers
FRAGMENTS = [
    "'",
    '"',
    "`",
    "#",
    " #",
    "$",
    "${X}",
    "\\",
    "\\n",
    "\\r",
    "\\'",
    '\\"',
    " ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "=",
    ":",
    "export ",
    "ä",
    "✅",
    "日本",
    "\u2028",
    "\u00a0",
    "\ufeff",
    "\x0b",
    "a",
    "Z",
    "0",
    "-",
    "_",
    "//",
    "@",
    "%40",
    "{",
    "}",
    "*",
]
awkward_text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS), st.text(st.characters(codec="utf-8"), min_size=1, max_size=2)
    ),
    max_size=10,
).map("".join)

KEYS = ["A", "B", "K1", "K2", "DATABASE_URL", "JWT_SECRET", "REDIS_PASSWORD"]
line = st.tuples(
    st.sampled_from(["", "  ", "export ", "export\t", "# "]),
    st.sampled_from(KEYS + ["A.B-c", "ÄÖ", "A B", "1"]),
    st.sampled_from(["=", " = ", ": ", ":", "=\t", "", "=\n"]),
    st.one_of(
        awkward_text,
        st.sampled_from(["'x y'", '"a\\nb"', "`t`", '"open', "'open", '"multi\nline"']),
    ),
    st.sampled_from(["", " # note", "#note", " # it's"]),
).map("".join)
eol = st.sampled_from(["\n", "\n", "\r\n", "\r", ""])
env_text = st.lists(st.tuples(st.one_of(line, awkward_text), eol).map("".join), max_size=8).map(
    "".join
)
BAD_UTF8 = [b"\xff", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x80\x80", b"\xc3"]


@st.composite
def env_bytes(draw):
    data = draw(env_text).encode("utf-8")
    if draw(st.integers(0, 4)) == 0:  # sometimes bytes that are not UTF-8
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + draw(st.sampled_from(BAD_UTF8)) + data[pos:]
    if draw(st.booleans()) and draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


def test_vectors_hold_for_installed_npm_dotenv(npm_dotenv):
    results = npm_dotenv.parse_many([case["src"] for case in VECTORS])
    assert list(results) == [case["npm"] for case in VECTORS]


PARSER_STATS = {"files": 0}


@settings(SETTINGS, max_examples=15)
@given(st.lists(env_bytes(), min_size=40, max_size=40))
def test_parser_equals_npm_on_generated_files(npm_dotenv, files):
    npm = npm_dotenv.parse_many(files)
    PARSER_STATS["files"] += len(files)
    for data, expected in zip(files, npm, strict=True):
        assert dotenv.parse(data) == expected, data


# hypothesis shrinks a failure to a small case but generates slowly: the bulk is from a seeded PRNG
def random_text(rng, max_parts=10):
    parts = []
    for _ in range(rng.randint(0, max_parts)):
        if rng.random() < 0.8:
            parts.append(rng.choice(FRAGMENTS))
        else:
            code = rng.choice(
                [rng.randint(0x20, 0x7E), rng.randint(0, 0x2FFF), rng.randint(0, 0x10FFFF)]
            )
            parts.append(
                chr(0xFFFD if 0xD800 <= code <= 0xDFFF else code)
            )  # no lone surrogates in UTF-8
    return "".join(parts)


def random_file(rng):
    lines = []
    for _ in range(rng.randint(0, 8)):
        if rng.random() < 0.7:
            value = (
                random_text(rng)
                if rng.random() < 0.7
                else rng.choice(["'x y'", '"a\\nb"', "`t`", '"open', "'open", '"multi\nline"'])
            )
            body = (
                rng.choice(["", "  ", "export ", "export\t", "# "])
                + rng.choice(KEYS + ["A.B-c", "ÄÖ", "1"])
                + rng.choice(["=", " = ", ": ", ":", "=\t", "", "=\n"])
                + value
                + rng.choice(["", " # note", "#note", " # it's"])
            )
        else:
            body = random_text(rng)
        lines.append(body + rng.choice(["\n", "\n", "\r\n", "\r", ""]))
    data = "".join(lines).encode("utf-8")
    if rng.random() < 0.2:
        pos = rng.randint(0, len(data))
        data = data[:pos] + rng.choice(BAD_UTF8) + data[pos:]
    return data


def test_parser_equals_npm_on_many_random_files(npm_dotenv):
    rng = random.Random(20241129)
    for _ in range(10):
        files = [random_file(rng) for _ in range(1000)]
        for data, expected in zip(files, npm_dotenv.parse_many(files), strict=True):
            assert dotenv.parse(data) == expected, data
        PARSER_STATS["files"] += len(files)


def test_parser_figures():
    if not PARSER_STATS["files"]:
        pytest.skip("run together with the parser tests above")
    print(
        f"parser: {PARSER_STATS['files']} generated files parsed identically by npm dotenv "
        "and dotenv.parse"
    )
    assert PARSER_STATS["files"] >= 10000


BASE_LINES = [
    "# intranet backend\n",
    "\n",
    "export A=1\n",
    'B="x y" # quoted\n',
    "K1=first\n",
    "K1='dup'\n",
    "DATABASE_URL=postgresql://u:p%40ss@127.0.0.1:5432/db#frag\n",
    "JWT_SECRET=`multi\nline`\n",
    'U="unterminated\n',
    "C: yaml\n",
    "A.B=dots # it's\n",
    "K2=  spaced   \n",
    "   # indented\n",
]
base_file = st.tuples(
    st.lists(st.sampled_from(BASE_LINES), max_size=10),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
).map(lambda t: "".join(t[0]).replace("\n", t[1]) + ("" if t[2] else "LAST=no-newline"))
wanted = st.dictionaries(
    st.sampled_from(KEYS + ["NEW1", "NEW2", "REDIS_HOST"]), awkward_text, min_size=1, max_size=4
)

ROUND_TRIP = {
    "generated": 0,
    "written": 0,
    "exact": 0,
    "wrong": 0,
    "refused_no_encoding": 0,
    "refused_in_this_file": 0,
}


def check_round_trip(oracle, cases):
    """Write each case's values into its file (dotenv.edit); npm dotenv must read back just that."""
    befores = oracle.parse_many([text for text, _ in cases])
    written, expectations = [], []
    for (text, values), before in zip(cases, befores, strict=True):
        values = dict(values)
        ROUND_TRIP["generated"] += len(values)
        while values:
            try:
                plan = dotenv.edit(text, values)
                break
            except SaltInvocationError as exc:
                message = str(exc)
                key = message.split(":", 1)[0]
                value = values.pop(key)  # the message names the key it refuses ...
                assert value not in message or len(value.strip()) < 4  # ... never the value
                assert message.endswith("nothing was changed")
                try:
                    dotenv.render(value, key=key)
                    ROUND_TRIP["refused_in_this_file"] += 1
                except SaltInvocationError:
                    ROUND_TRIP["refused_no_encoding"] += 1
        if values:
            written.append(plan["text"].encode("utf-8", "surrogateescape"))
            expectations.append((dict(before, **values), values))
    for result, (expected, values) in zip(oracle.parse_many(written), expectations, strict=True):
        ROUND_TRIP["written"] += len(values)
        ROUND_TRIP["exact" if result == expected else "wrong"] += len(values)
        assert result == expected


@SETTINGS
@given(st.lists(st.tuples(base_file, wanted), min_size=25, max_size=25))
def test_round_trip_generated_values(npm_dotenv, cases):
    check_round_trip(npm_dotenv, cases)


def random_base(rng):
    if rng.random() < 0.25:
        return random_file(
            rng
        )  # awkward surroundings, unterminated quotes, bytes that are not UTF-8
    text = "".join(rng.choice(BASE_LINES) for _ in range(rng.randint(0, 10)))
    return (text.replace("\n", "\r\n") if rng.random() < 0.3 else text) + rng.choice(
        ["", "LAST=no-newline"]
    )


def test_round_trip_many_random_values(npm_dotenv):
    rng = random.Random(20241130)
    for _ in range(8):
        keys = KEYS + ["NEW1", "NEW2"]
        check_round_trip(
            npm_dotenv,
            [
                (
                    random_base(rng),
                    {rng.choice(keys): random_text(rng) for _ in range(rng.randint(1, 4))},
                )
                for _ in range(500)
            ],
        )


def test_round_trip_figures():
    if not ROUND_TRIP["generated"]:
        pytest.skip("run together with the round-trip tests above")
    print("round trip: " + json.dumps(ROUND_TRIP))
    assert ROUND_TRIP["wrong"] == 0 and ROUND_TRIP["exact"] == ROUND_TRIP["written"] >= 8000
    assert ROUND_TRIP["generated"] == (
        ROUND_TRIP["written"]
        + ROUND_TRIP["refused_no_encoding"]
        + ROUND_TRIP["refused_in_this_file"]
    )


# issue 12: npm dotenv ignores a `__proto__` key (and only that one); bytes that are not UTF-8
PROTO_FILES = [
    b"__proto__=x\nA=1\n",
    b"export __proto__='y'\nconstructor=c\nprototype=p\nhasOwnProperty=h\n",
    b"__proto__=x\n__proto__=z\nB=2\n__PROTO__=upper\n",
    b"A=caf\xe9\nB=\xff\xfe\n# \xe9\nC=3\n",
]


def test_proto_and_bytes_read_like_npm_dotenv(npm_dotenv):
    for data, expected in zip(PROTO_FILES, npm_dotenv.parse_many(PROTO_FILES), strict=True):
        assert dotenv.parse(data) == expected, data
