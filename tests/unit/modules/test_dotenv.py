"""
The dotenv text functions (_utils/serverfix_dotenv.py; no loader, no files): the npm-dotenv parser
against the 94 vectors recorded from npm dotenv, the value writer, and in-place edits that keep
every other byte. The same functions are cross-checked against the real npm dotenv in
tests/integration/modules/test_dotenv_npm.py.
"""

import json

import pytest
from salt.exceptions import SaltInvocationError

from tests.support.loader import import_salt_module
from tests.support.paths import REPO, UTILS_DIR

# the parser, writer and edit (pure text functions) that the dotenv module calls
dotenv = import_salt_module(UTILS_DIR / "serverfix_dotenv.py", "serverfix_unit_dotenv")
mask = import_salt_module(UTILS_DIR / "serverfix_mask.py", "serverfix_unit_mask")
VECTORS = json.loads((REPO / "tests" / "data" / "dotenv-vectors.json").read_text(encoding="utf-8"))[
    "cases"
]


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_parser_matches_npm_vectors(case):
    got = dotenv.parse(case["src"])
    assert got == case["npm"]
    assert list(got) == list(
        case["npm"]
    )  # same key order too (no integer-like keys in the vectors)


def test_parser_reads_bytes_like_node():
    # a BOM is whitespace to JavaScript's \s; bytes that are not UTF-8 become U+FFFD as in node
    assert dotenv.parse(b"\xef\xbb\xbfA=1\nB=x\xff\xfey\n") == {"A": "1", "B": "x\ufffd\ufffdy"}


RUNBOOK = {
    "REDIS_HOST": "127.0.0.1",
    "REDIS_PORT": 6379,
    "REDIS_PASSWORD": "",
    "REDIS_DB": 0,
    "QUEUE_ENABLED": "true",
    "QUEUE_CONCURRENCY": 5,
}


def test_runbook_keys_appended_after_missing_final_newline():
    plan = dotenv.edit("NODE_ENV=production", RUNBOOK, show=mask.value)
    assert plan["text"] == (
        "NODE_ENV=production\nREDIS_HOST=127.0.0.1\nREDIS_PORT=6379\nREDIS_PASSWORD=''\n"
        "REDIS_DB=0\nQUEUE_ENABLED=true\nQUEUE_CONCURRENCY=5\n"
    )
    assert plan["added"] == list(RUNBOOK) and plan["changed"] == plan["removed"] == []
    # an empty value hides nothing: shown as empty (issue 12, item 14)
    assert plan["values"]["REDIS_PASSWORD"] == {"old": None, "new": ""}
    assert plan["values"]["REDIS_PORT"] == {"old": None, "new": "6379"}


@pytest.mark.parametrize(
    "before, values, after",
    [
        # inline comment, export prefix and spacing around `=` stay
        (
            "export REDIS_HOST = localhost   # old\n",
            {"REDIS_HOST": "127.0.0.1"},
            "export REDIS_HOST = 127.0.0.1   # old\n",
        ),
        # CRLF kept, also for the appended key
        ("# c\r\nA=1\r\n", {"A": "2", "B": "x"}, "# c\r\nA=2\r\nB=x\r\n"),
        # every occurrence of a duplicate; the one already right keeps its quoting
        ("A=1\nB=2\nA='3'\nA=4\n", {"A": "3"}, "A=3\nB=2\nA='3'\nA=3\n"),
        # YAML-style `KEY: value`
        ("A: 1\n", {"A": "two words"}, "A: 'two words'\n"),
        # a quoted multi-line value is replaced as a whole
        ('K="-----BEGIN-----\nabc\n-----END-----"\nB=2\n', {"K": "new"}, "K=new\nB=2\n"),
        # empty value with a comment right after `=`
        ("A=#note\n", {"A": "v"}, "A=v#note\n"),
        # a value on the line after `=` (npm dotenv reads it) is brought next to `=`
        ("A=\n  'x'\nB=1\n", {"A": "y"}, "A=y\nB=1\n"),
        # BOM and a byte that is not UTF-8 elsewhere in the file are kept
        ("\ufeffA=1\n# \udcff\n", {"A": "2"}, "\ufeffA=2\n# \udcff\n"),
    ],
    ids=[
        "export-inline-comment",
        "crlf",
        "duplicates",
        "yaml-colon",
        "multiline",
        "hash-after-eq",
        "value-next-line",
        "bom-and-bad-byte",
    ],
)
def test_edit_changes_only_the_value_text(before, values, after):
    plan = dotenv.edit(before, values)
    assert plan["text"] == after
    expected = dotenv.parse(before)
    expected.update({k: str(v) for k, v in values.items()})
    assert dotenv.parse(after) == expected


def test_edit_compares_parsed_values_not_text():
    text = "A=\"1\"\nB='x y' # c\nC=`z`\nD=\n"
    plan = dotenv.edit(text, {"A": 1, "B": "x y", "C": "z", "D": ""})
    assert plan["text"] == text and not (plan["added"] or plan["changed"])


def test_remove_keeps_neighbours_and_comments():
    text = '# head\nA=1 # inline\n\n# about B\nexport B="x\ny"\nC=3\nA=again\n'
    plan = dotenv.edit(text, remove=["A", "B"])
    assert plan["text"] == "# head\n\n# about B\nC=3\n"
    assert plan["removed"] == ["A", "B"]


@pytest.mark.parametrize(
    "value, written",
    [
        ("plain-1.2_x:/@%+,=", "plain-1.2_x:/@%+,="),
        ("", "''"),
        ("has space", "'has space'"),
        ("p#ss", "'p#ss'"),
        ("it's", '"it\'s"'),
        ("it's\nmulti", '"it\'s\\nmulti"'),
        ("a\rb", '"a\\rb"'),
        ('it\'s "q" \\n', '`it\'s "q" \\n`'),
        ("${NOT_EXPANDED}", "'${NOT_EXPANDED}'"),
        ("C:\\dir\\", "C:\\dir\\"),  # ends with a backslash: only unquoted holds it
        ("a'b\"c`d", "a'b\"c`d"),
        (5, "5"),
        (0.5, "0.5"),
    ],
)
def test_render_picks_a_form_npm_reads_back(value, written):
    assert dotenv.render(value) == written
    assert dotenv.parse(f"K={written}\n")["K"] == str(value)


@pytest.mark.parametrize(
    "value, reason",
    [
        ("a carriage\rreturn and \\n", "carriage return"),
        ("x'y\"z`\r#", "carriage return"),
        ("'\"` #\nx\\", "no quoting style holds this mix"),
    ],
)
def test_render_refuses_without_showing_the_value(value, reason):
    with pytest.raises(SaltInvocationError) as exc:
        dotenv.render(value, key="JWT_SECRET")
    message = str(exc.value)
    assert "JWT_SECRET" in message and reason in message and "nothing was changed" in message
    assert value.strip() not in message


@pytest.mark.parametrize(
    "values, message",
    [
        ({"BAD KEY": "x"}, "'BAD KEY' is not a valid .env key"),
        ({"ÄÖ": "x"}, "is not a valid .env key"),
        (
            {"A": True},
            "A: the value must be a string or a number, not bool (write 'true'/'false' as a quoted",
        ),
        ({"A": None}, "A: the value must be a string or a number, not NoneType"),
        ({"A": ["x"]}, "A: the value must be a string or a number, not list"),
    ],
)
def test_edit_refuses_bad_input(values, message):
    with pytest.raises(SaltInvocationError, match=message.replace("(", r"\(").replace("'", "'")):
        dotenv.edit("A=1\n", values)


def test_edit_refuses_a_value_that_would_change_a_neighbour():
    # an unterminated quote above: writing B as `" # "`-ish text would swallow lines;
    # every form is checked
    text = 'A="abc\nB=old\n'
    plan = dotenv.edit(text, {"B": 'x # "'})
    assert dotenv.parse(plan["text"]) == {"A": '"abc', "B": 'x # "'}


@pytest.mark.parametrize(
    "key, secret",
    [
        ("REDIS_PASSWORD", True),
        ("jwt_secret", True),
        ("API_KEY", True),
        ("GITHUB_TOKEN", True),
        ("REDIS_HOST", False),
        ("QUEUE_CONCURRENCY", False),
        # a key the formula did not define is possibly secret, whatever its name (item 13)
        ("OTHER", True),
        ("SMTP_PASS", True),
        ("DB_PASS", True),
        ("PASSWD", True),
        ("MY_API_TOKEN", True),
        ("DATABASE_URL", True),
    ],
)
def test_default_secret_names(key, secret):
    assert (not mask.is_public(key)) is secret
    assert mask.is_public("REDIS_HOST", secret_keys=["REDIS_HOST"]) is False
    assert mask.is_public("OTHER", public_keys=["OTHER"]) is True


# --------------------------------------------------------------------------- issue 12


EXTRA = {
    "SMTP_PASS": "smtp-pw-4711",
    "DB_PASS": "db-pw-0815",
    "DATABASE_URL": "postgres://app:url-pw-99@host/db",
    "MY_API_TOKEN": "tok-123456",
    "PASSWD": "pw-passwd-1",
    "NODE_ENV": "staging-x",
}


@pytest.mark.parametrize("key", sorted(EXTRA))
def test_edit_never_shows_a_value_the_formula_did_not_define(key):
    # item 13: the new value and the old one read from the file are both hidden
    old_text = f"{key}=old-value-{key}\nREDIS_HOST=localhost\n"
    plan = dotenv.edit(old_text, {key: EXTRA[key], "REDIS_HOST": "127.0.0.1"}, show=mask.value)
    assert plan["values"][key] == {"old": "<secret>", "new": "<secret>"}
    assert plan["values"]["REDIS_HOST"] == {"old": "localhost", "new": "127.0.0.1"}
    shown = json.dumps({k: v for k, v in plan.items() if k != "text"})
    assert EXTRA[key] not in shown and f"old-value-{key}" not in shown
    # the default of the pure function shows nothing at all
    assert dotenv.edit(old_text, {key: EXTRA[key]})["values"][key]["new"] == "<secret>"


def test_empty_values_are_shown_as_empty_never_a_non_empty_secret():
    # item 14: '' -> <secret> says a password gets set; <secret> -> '' that one gets removed
    plan = dotenv.edit(
        "REDIS_PASSWORD=''\nDB_PASS=\n",
        {"REDIS_PASSWORD": "s3cret-pw", "DB_PASS": "x"},
        show=mask.value,
    )
    assert plan["values"]["REDIS_PASSWORD"] == {"old": "", "new": "<secret>"}
    assert plan["values"]["DB_PASS"] == {"old": "", "new": "<secret>"}
    plan = dotenv.edit("REDIS_PASSWORD=s3cret-pw\n", {"REDIS_PASSWORD": ""}, show=mask.value)
    assert plan["values"]["REDIS_PASSWORD"] == {"old": "<secret>", "new": ""}


def test_public_values_have_url_passwords_masked():
    plan = dotenv.edit("", {"REDIS_HOST": "redis://:p@ss@h"}, show=mask.value)
    assert plan["values"]["REDIS_HOST"]["new"] == "redis://:<secret>@h"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("postgres://app:pw@host/db", "postgres://app:<secret>@host/db"),
        (
            "connect redis://:hunter22@127.0.0.1:6379 ok",
            "connect redis://:<secret>@127.0.0.1:6379 ok",
        ),
        (
            "DATABASE_URL=postgres://app:p@ss@host/db",
            "DATABASE_URL=postgres://app:<secret>@host/db",
        ),
        ("err: mysql://root:a/b?c@db:3306/x", "err: mysql://root:<secret>@db:3306/x"),
        ('{"url":"amqp://u:q\'w"e@mq"}', '{"url":"amqp://u:<secret>@mq"}'),
        (
            "https://user@host/a and http://host:8080/p",
            "https://user@host/a and http://host:8080/p",
        ),
        ("SMTP_PASS=a,b;c next", "SMTP_PASS=<secret> next"),
    ],
)
def test_url_credentials_masked_in_any_text(text, expected):
    assert mask.text(text) == expected
    assert mask.text(mask.text(text)) == expected  # idempotent
    assert mask.scrub({"a": [text]}) == {"a": [expected if "://" in text else text]}


def test_public_keys_are_the_formula_keys_but_the_password():
    defaults = import_salt_module(
        UTILS_DIR / "serverfix_defaults.py", "serverfix_unit_defaults_mask"
    )
    assert set(mask.PUBLIC_ENV_KEYS) == set(defaults.managed_env()) - {"REDIS_PASSWORD"}


def test_proto_key_ignored_like_npm_dotenv():
    # item 12: npm dotenv's parse() drops __proto__ (assigning it to an object sets nothing)
    assert dotenv.parse("__proto__=x\nconstructor=y\nA=1\n") == {"constructor": "y", "A": "1"}
    with pytest.raises(SaltInvocationError, match="__proto__.*npm dotenv ignores it"):
        dotenv.edit("A=1\n", {"__proto__": "x"})
    with pytest.raises(SaltInvocationError, match="__proto__"):
        dotenv.edit("__proto__=x\n", remove=["__proto__"])


def test_bytes_that_are_not_utf8_kept_byte_for_byte():
    # item 5: a Latin-1 comment and value survive an edit of another key unchanged
    data = b"# caf\xe9 \xff\nNAME=Jos\xe9\nREDIS_HOST=localhost\r\nX=\xc3\n"
    plan = dotenv.edit(data, {"REDIS_HOST": "127.0.0.1", "NEW": "1"})
    out = plan["text"].encode("utf-8", "surrogateescape")
    assert out == data.replace(b"localhost", b"127.0.0.1") + b"NEW=1\n"  # the first line's ending
