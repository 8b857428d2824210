"""
Quality gates the suite runs: salt-lint and yamllint clean, a ``CLI Example:`` in every public
function docstring of ``_modules`` and ``_wrapper`` (functions a person calls from the CLI),
stdlib + salt only in the custom modules, and pillar.example / FORMULA complete.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.loader import DEFAULTS, import_salt_module
from tests.support.paths import REPO

# what the file server ships (to minions, salt-ssh targets, or the master for _wrapper): stdlib
# + salt only; each is a real dir under formula/ with a top-level link
CUSTOM_DIRS = ("_modules", "_states", "_utils", "_output", "_wrapper")
# the dirs whose public functions are CLI verbs (salt-call / salt-ssh <target> mod.fun)
CLI_DIRS = ("_modules", "_wrapper")
BIN = Path(sys.executable).parent


def _python_files(*dirs):
    return sorted(p for d in dirs for p in (REPO / d).glob("*.py"))


def test_yamllint_clean():
    files = [str(p) for p in (REPO / "formula").rglob("*.yaml")] + [
        str(REPO / "pillar.example"),
        str(REPO / "FORMULA"),
    ]
    out = subprocess.run(
        [str(BIN / "yamllint"), "-s", "-c", str(REPO / ".yamllint"), *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_salt_lint_clean():
    files = [str(p) for p in sorted((REPO / "formula" / "serverfix").glob("*.sls"))]
    out = subprocess.run(
        [str(BIN / "salt-lint"), "-c", str(REPO / ".salt-lint"), *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    "path", _python_files(*CLI_DIRS), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_public_functions_have_cli_example(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    missing = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and not node.name.startswith("_")
        and "CLI Example:" not in (ast.get_docstring(node) or "")
    ]
    assert not missing, (
        f"{path.name}: public functions without a 'CLI Example:' docstring: {missing}"
    )


@pytest.mark.parametrize(
    "path", _python_files(*CUSTOM_DIRS), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_custom_modules_import_stdlib_and_salt_only(path):
    allowed = set(sys.stdlib_module_names) | {"salt", "__future__"}
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        bad += [
            f"line {node.lineno}: {name}" for name in names if name.split(".")[0] not in allowed
        ]
    assert not bad, f"{path.name} imports what the minion's Python may not have: {bad}"


def _key_paths(data, prefix=()):
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _key_paths(value, prefix + (key,))
        else:
            yield prefix + (key,)


def test_pillar_example_documents_every_default():
    example = yaml.safe_load((REPO / "pillar.example").read_text(encoding="utf-8"))["serverfix"]
    assert sorted(_key_paths(example)) == sorted(_key_paths(DEFAULTS))
    assert example == DEFAULTS, "pillar.example shows each key with its default"


def test_formula_metadata_has_spm_fields():
    meta = yaml.safe_load((REPO / "FORMULA").read_text(encoding="utf-8"))
    for field in (
        "name",
        "os",
        "os_family",
        "version",
        "release",
        "minimum_version",
        "summary",
        "description",
        "top_level_dir",
    ):
        assert meta.get(field), field
    assert (REPO / "formula" / meta["top_level_dir"] / "init.sls").exists()


def test_custom_dirs_are_all_checked():
    # a new module dir under formula/ must join CUSTOM_DIRS (and so every check here)
    shipped = {p.name for p in (REPO / "formula").iterdir() if p.name.startswith("_")}
    assert shipped == set(CUSTOM_DIRS)
    for name in CUSTOM_DIRS:
        assert _python_files(name), f"{name}: no module found (a broken link?)"


@pytest.mark.parametrize("link", CUSTOM_DIRS)
def test_file_root_links_custom_module_dirs(link):
    # the file root is formula/: the module dirs are real dirs there (gitfs does not follow
    # symlinks to directories, salt#21413); the top-level ones are links for readers
    path = REPO / "formula" / link
    assert path.is_dir() and not path.is_symlink()
    top = REPO / link
    assert top.is_symlink() and top.readlink() == Path("formula") / link


def test_shipped_defaults_match_defaults_yaml():
    # salt-ssh targets get the defaults from _utils/serverfix_defaults.py, generated from the YAML
    gen = import_salt_module(REPO / "scripts" / "gen-defaults.py", "serverfix_gen_defaults")
    assert gen.TARGET.read_text(encoding="utf-8") == gen.render(), (
        "run scripts/gen-defaults.py and commit"
    )


def test_changed_earlier_reads_the_runs_results():
    run = import_salt_module(REPO / "_utils" / "serverfix_run.py", "serverfix_unit_run_util")
    running = {
        "redis_server_|-cfg_|-/etc/redis/redis.conf_|-configured": {
            "name": "/etc/redis/redis.conf",
            "changes": {"appendonly": {}},
            "result": True,
            "__sls__": "serverfix.redis",
        },
        "dotenv_|-env_|-/x/.env_|-present": {
            "name": "/x/.env",
            "changes": {},
            "result": True,
            "__sls__": "serverfix.env",
        },
        "pkg_|-p_|-redis-server_|-installed": {
            "name": "redis-server",
            "changes": {"x": 1},
            "result": False,
            "__sls__": "serverfix.redis",
        },
    }
    assert run.changed_earlier(running, sls=["serverfix.redis"])
    assert not run.changed_earlier(running, sls=["serverfix.env"])  # no changes there
    assert run.changed_earlier(
        running, state="redis_server.configured", name="/etc/redis/redis.conf"
    )
    assert not run.changed_earlier(running, state="redis_server.configured", name="/other.conf")
    assert not run.changed_earlier(running, state="pkg.installed")  # it failed: not a change
    assert not run.changed_earlier(None, sls=["serverfix.redis"])


def test_pillar_references_are_read_from_the_pillar():
    refs = import_salt_module(REPO / "_utils" / "serverfix_pillar.py", "serverfix_unit_pillar_util")
    pillar = {"serverfix": {"redis": {"password": "pw"}, "dotenv": {"extra": {"A.B": 3}}}}
    config = {
        "redis": {"password": {"pillar": "serverfix:redis:password"}, "port": 6379},
        "dotenv": {"extra": {"A.B": {"pillar": "serverfix:dotenv:extra:A.B"}}},
        "patterns": [{"pillar": "serverfix:missing"}, "x"],
    }
    assert refs.resolve_all(config, pillar) == {
        "redis": {"password": "pw", "port": 6379},
        "dotenv": {"extra": {"A.B": 3}},
        "patterns": ["", "x"],
    }
    assert refs.resolve({"pillar": "a", "other": 1}, pillar) == {
        "pillar": "a",
        "other": 1,
    }  # not a reference
    assert refs.resolve("plain", pillar) == "plain" and refs.lookup(None, "a:b", "d") == "d"
