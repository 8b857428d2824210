"""
The Python style gate: ``ruff format --check``, ``ruff check`` and ``pylint`` clean over the lint
scope, and the Salt dunders each module uses declared once under ``if TYPE_CHECKING:``.

The configuration (and the scope) is in ``pyproject.toml``. The tools run from the test venv
(``sys.executable -m ...``), without caches in the tree, so the gate needs no root.

Run it alone::

    PATH=/var/cache/serverfix/venv/bin:$PATH python -m pytest -q tests/unit/test_lint.py

or one gate from a shell (pre-commit does this, passing the staged files)::

    python -m tests.unit.test_lint format|check|pylint|dunders|all [FILES...]

Fixing: ``python -m ruff format <scope>`` rewrites the layout; ``python -m ruff check --fix``
sorts imports; the rest (long strings and comments, pylint's findings) is fixed by hand.
"""

import ast
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
LINT = PYPROJECT["tool"]["serverfix"]["lint"]
# the names Salt's loader injects, as the linters are told (one list, in pyproject.toml)
LOADER_DUNDERS = frozenset(PYPROJECT["tool"]["ruff"]["builtins"])
# where the loader injects them: the custom modules (tests and tools import nothing of the kind)
SALT_MODULE_DIRS = ("_modules", "_states", "_utils", "_output", "_wrapper")
EXCLUDED = ("tests/node",)
TIMEOUT = 900  # pylint over the whole scope: about 30 s on the 2-CPU build machine
GATES = ("format", "check", "pylint", "dunders")


def scope():
    """The scope's paths that exist, relative to the repository (directories and files)."""
    found = []
    for entry in LINT["scope"]:
        found += sorted(str(p.relative_to(REPO)) for p in REPO.glob(entry) if p.exists())
    return found


def in_scope(path):
    """Whether a file (as pre-commit passes it, relative to the repository) is in the scope.

    Compared by real path: the module dirs are linked between the top level and ``formula/``.
    """
    real = Path(path).resolve()
    if real.suffix != ".py":
        return False
    if any(real.is_relative_to((REPO / x).resolve()) for x in EXCLUDED):
        return False
    for entry in LINT["scope"]:
        if "*" in entry:
            parent, pattern = entry.rsplit("/", 1)
            if real.parent == (REPO / parent).resolve() and fnmatch(real.name, pattern):
                return True
        elif real.is_relative_to((REPO / entry).resolve()):
            return True
    return False


def _is_test(path):
    return Path(REPO / path).resolve().is_relative_to((REPO / "tests").resolve())


def commands(gate, files=None):
    """The command lines of one gate, over ``files`` (default: the whole scope)."""
    paths = [f for f in files if in_scope(f)] if files is not None else scope()
    if not paths:
        return []
    py = [sys.executable, "-m"]
    if gate == "format":
        return [py + ["ruff", "format", "--check", "--no-cache", *paths]]
    if gate == "check":
        return [py + ["ruff", "check", "--no-fix", "--no-cache", "--output-format=concise", *paths]]
    if gate == "pylint":
        base = py + ["pylint", "--persistent=n", "--score=n", "--reports=n"]
        code = [p for p in paths if not _is_test(p)]
        tests = [p for p in paths if _is_test(p)]
        runs = [base + code] if code else []
        if tests:
            runs.append(base + ["--disable=" + ",".join(LINT["pylint-tests-disable"]), *tests])
        return runs
    raise ValueError(f"unknown gate {gate!r}: one of {', '.join(GATES)}")


def run_gate(gate, files=None):
    """Run one gate; return (ok, output).

    A gate's command lines run side by side (pylint's two runs, code and tests, take about as
    long each: together they finish in the time of the longer one on the 2-CPU build machine).
    """
    if gate == "dunders":
        problems = dunder_problems(files)
        return not problems, "\n".join(problems)
    procs = [
        (
            argv,
            subprocess.Popen(  # pylint: disable=consider-using-with  # waited for just below
                argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
        )
        for argv in commands(gate, files)
    ]
    ok, out = True, []
    for argv, proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for _, other in procs:
                other.kill()
            raise
        ok = ok and proc.returncode == 0
        out.append(f"$ {' '.join(argv[1:])}\n{stdout}{stderr}")
    return ok, "\n".join(out)


def _declared_under_type_checking(tree):
    names = set()
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            names |= {
                n.target.id
                for n in node.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            }
    return names


def dunder_problems(files=None):
    """Salt modules using a loader dunder without declaring it, or declaring one they do not use."""
    if files is None:
        paths = sorted(p for d in SALT_MODULE_DIRS for p in (REPO / d).glob("*.py"))
    else:
        paths = [
            Path(f).resolve()
            for f in files
            if in_scope(f) and Path(f).resolve().parent.name in SALT_MODULE_DIRS
        ]
    problems = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO)
        tree = ast.parse(text)
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in LOADER_DUNDERS}
        declared = _declared_under_type_checking(tree)
        if used - declared:
            problems.append(
                f"{rel}: uses {', '.join(sorted(used - declared))} without declaring them under "
                "`if TYPE_CHECKING:` at the top"
            )
        if declared - used:
            unused = ", ".join(sorted(declared - used))
            problems.append(f"{rel}: declares {unused} but never uses it")
        inline = text.count("pylint: disable=undefined-variable")
        if inline:
            problems.append(
                f"{rel}: {inline} inline `pylint: disable=undefined-variable` (declare instead)"
            )
    return problems


@pytest.mark.parametrize("gate", GATES)
def test_lint_gate_clean(gate):
    ok, output = run_gate(gate)
    assert ok, f"the {gate} gate failed:\n{output}"


def test_lint_scope_covers_the_custom_modules():
    found = scope()
    for required in (*SALT_MODULE_DIRS, "tools", "tests"):
        assert required in found
    assert in_scope(REPO / "scripts" / "gen-defaults.py")
    assert not in_scope(REPO / "tests" / "node" / "x.py")
    assert not in_scope(REPO / "formula" / "serverfix" / "map.jinja")
    # the same module, by its top-level path or through formula/ (whichever is the link)
    assert in_scope(REPO / "formula" / "_modules" / "pm2.py")


def main(argv):
    """``python -m tests.unit.test_lint GATE [FILES...]``: exit 1 with the tool's output."""
    if not argv or argv[0] not in (*GATES, "all"):
        print(f"usage: python -m tests.unit.test_lint {{{'|'.join(GATES)}|all}} [FILES...]")
        return 2
    gates = GATES if argv[0] == "all" else (argv[0],)
    files = argv[1:] or None
    failed = False
    for gate in gates:
        ok, output = run_gate(gate, files)
        if not ok:
            failed = True
            print(output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
