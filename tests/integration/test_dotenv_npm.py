"""
The dotenv module against the real reader: npm dotenv (tests/node/node_modules/dotenv, run by node).

- the recorded vectors still hold for the installed npm dotenv;
- the Python parser gives npm dotenv's exact result on thousands of generated awkward files;
- round trip: awkward generated values written into generated files (comments, CRLF, duplicates,
  ``export``, inline comments, multi-line and unterminated quotes) read back exactly with npm
  dotenv, and every other key keeps its value; a value the writer refuses is refused with a
  message that does not contain it.

The figures are printed (run with ``-rP`` to see them).
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from salt.exceptions import SaltInvocationError

from tests.conftest import MODULES_DIR, REPO, import_salt_module
from tests.dotenv_npm import npm_dotenv  # noqa: F401  pylint: disable=unused-import

dotenv = import_salt_module(MODULES_DIR / "dotenv.py", "serverfix_npm_dotenv")
VECTORS = json.loads((REPO / "tests" / "data" / "dotenv-vectors.json").read_text(encoding="utf-8"))["cases"]
# one node round trip per hypothesis example, each carrying a batch of cases
SETTINGS = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# the characters and sequences that break naive .env writers
FRAGMENTS = ["'", '"', "`", "#", " #", "$", "${X}", "\\", "\\n", "\\r", "\\'", '\\"', " ", "\t", "\n", "\r", "\r\n",
             "=", ":", "export ", "ä", "✅", "日本", "\u2028", "\u00a0", "\ufeff", "\x0b", "a", "Z", "0", "-", "_",
             "//", "@", "%40", "{", "}", "*"]
awkward_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(st.characters(codec="utf-8"), min_size=1, max_size=2)),
    max_size=10,
).map("".join)

KEYS = ["A", "B", "K1", "K2", "DATABASE_URL", "JWT_SECRET", "REDIS_PASSWORD"]
line = st.tuples(
    st.sampled_from(["", "  ", "export ", "export\t", "# "]),
    st.sampled_from(KEYS + ["A.B-c", "ÄÖ", "A B", "1"]),
    st.sampled_from(["=", " = ", ": ", ":", "=\t", "", "=\n"]),
    st.one_of(awkward_text, st.sampled_from(["'x y'", '"a\\nb"', "`t`", '"open', "'open", '"multi\nline"'])),
    st.sampled_from(["", " # note", "#note", " # it's"]),
).map("".join)
eol = st.sampled_from(["\n", "\n", "\r\n", "\r", ""])
env_text = st.lists(st.tuples(st.one_of(line, awkward_text), eol).map("".join), max_size=8).map("".join)
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
    assert [r for r in results] == [case["npm"] for case in VECTORS]


PARSER_STATS = {"files": 0}


@SETTINGS
@given(st.lists(env_bytes(), min_size=40, max_size=40))
def test_parser_equals_npm_on_generated_files(npm_dotenv, files):
    npm = npm_dotenv.parse_many(files)
    PARSER_STATS["files"] += len(files)
    for data, expected in zip(files, npm):
        assert dotenv.parse(data) == expected, data


def test_parser_figures():
    print(f"parser: {PARSER_STATS['files']} generated files parsed identically by npm dotenv and dotenv.parse")
    assert PARSER_STATS["files"] >= 2000


BASE_LINES = ["# intranet backend\n", "\n", "export A=1\n", "B=\"x y\" # quoted\n", "K1=first\n", "K1='dup'\n",
              "DATABASE_URL=postgresql://u:p%40ss@127.0.0.1:5432/db#frag\n", "JWT_SECRET=`multi\nline`\n",
              "U=\"unterminated\n", "C: yaml\n", "A.B=dots # it's\n", "K2=  spaced   \n", "   # indented\n"]
base_file = st.tuples(
    st.lists(st.sampled_from(BASE_LINES), max_size=10),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
).map(lambda t: ("".join(t[0]).replace("\n", t[1]) + ("" if t[2] else "LAST=no-newline")))
wanted = st.dictionaries(st.sampled_from(KEYS + ["NEW1", "NEW2", "REDIS_HOST"]), awkward_text, min_size=1, max_size=4)

ROUND_TRIP = {"values": 0, "exact": 0, "refused": 0, "wrong": 0}


@SETTINGS
@given(st.lists(st.tuples(base_file, wanted), min_size=25, max_size=25))
def test_round_trip_generated_values(npm_dotenv, cases):
    written, expectations = [], []
    for text, values in cases:
        before = npm_dotenv_parse_cache(npm_dotenv, text)
        try:
            plan = dotenv.edit(text, values)
        except SaltInvocationError as exc:
            ROUND_TRIP["refused"] += len(values)
            for value in values.values():
                if len(value.strip()) > 3:
                    assert value not in str(exc)  # the message never shows the value
            assert "nothing was changed" in str(exc)
            continue
        written.append(plan["text"].encode("utf-8", "surrogateescape"))
        expectations.append((dict(before, **values), values))
    for result, (expected, values) in zip(npm_dotenv.parse_many(written), expectations):
        ROUND_TRIP["values"] += len(values)
        if result == expected:
            ROUND_TRIP["exact"] += len(values)
        else:
            ROUND_TRIP["wrong"] += len(values)
        assert result == expected


def npm_dotenv_parse_cache(oracle, text, _cache={}):  # pylint: disable=dangerous-default-value
    if text not in _cache:
        _cache[text] = oracle.parse(text)
    return _cache[text]


def test_round_trip_figures():
    figures = dict(ROUND_TRIP, generated=ROUND_TRIP["values"] + ROUND_TRIP["refused"])
    print("round trip: " + json.dumps(figures))
    assert figures["wrong"] == 0 and figures["values"] >= 3000
