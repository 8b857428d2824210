"""
Shared by the distribution tests (gitfs, SPM): the pillar, the modules a sync must bring, and the
checks of a master/minion run of the formula served some other way than ``file_roots: formula``.

The pillar switches off every phase that needs this host's Redis, swap or a running backend
(Redis on 6379 belongs to the Phase 1 test; no pm2 daemon runs in the temp ``PM2_HOME``, and
serverfix never starts one), so ``state.apply serverfix`` for real only edits a temp ``.env``:
the whole formula renders, every phase's states run, and nothing outside the temp dir changes.
"""

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.host import sha256
from tests.support.paths import NODE_BIN, REPO
from tests.support.returns import by_id, changed_ids, failed_ids, summary

ENV_TEXT = "# intranet backend settings (distribution test)\nNODE_ENV=production\nJWT_SECRET=x1\n"
# formula/_<kind> -> the key of saltutil.sync_all's return that lists its modules
SYNC_KEYS = {"_modules": "modules", "_states": "states", "_utils": "utils", "_output": "output"}


def settings(workdir):
    """The ``serverfix`` pillar: Phase 2 on a temp ``.env``, the host-wide phases switched off."""
    env_file = Path(workdir) / "backend" / ".env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(ENV_TEXT, encoding="utf-8")
    env_file.chmod(0o640)
    pm2_home = Path(workdir) / "pm2"
    pm2_home.mkdir(exist_ok=True)
    return {
        "dotenv": {"file": str(env_file)},
        "redis": {"enabled": False},
        "pm2": {"home": str(pm2_home), "bin": str(NODE_BIN / "pm2")},
        "swap": {"enabled": False},
        "verify": {"enabled": False},
    }


def expected_sync(module_root=REPO / "formula"):
    """``{sync_all key: ["modules.serverfix", ...]}`` for every ``_<kind>/*.py`` of the formula."""
    expected = {}
    for dirname, key in SYNC_KEYS.items():
        names = sorted(path.stem for path in (module_root / dirname).glob("*.py"))
        assert names, f"no modules in {module_root / dirname}"
        expected[key] = [f"{key}.{name}" for name in names]
    return expected


def assert_synced_everything(ret, module_root=REPO / "formula"):
    """saltutil.sync_all's return lists every serverfix module of every kind."""
    assert ret.returncode == 0, ret
    for key, names in expected_sync(module_root).items():
        missing = sorted(set(names) - set(ret.data.get(key) or []))
        assert not missing, f"saltutil.sync_all did not sync {missing}; it returned {ret.data}"


def assert_preview_then_apply(salt_cli, minion_id, env_file):
    """test=True predicts the .env change and changes nothing; the real run makes exactly it."""
    before = sha256(env_file)
    ret = salt_cli.run("state.apply", "serverfix", test=True, minion_tgt=minion_id)
    assert ret.returncode == 0, summary(ret)
    assert not failed_ids(ret.data), summary(ret)
    states = by_id(ret.data)
    assert {
        "serverfix-preflight",
        "serverfix-env-keys-present",
        "serverfix-backend-restarted",
    } <= set(states), sorted(states)
    assert states["serverfix-env-keys-present"]["result"] is None, summary(ret)
    assert sha256(env_file) == before  # test=True: byte-identical
    predicted = changed_ids(ret.data)

    ret = salt_cli.run("state.apply", "serverfix", minion_tgt=minion_id)
    assert ret.returncode == 0, summary(ret)
    assert not failed_ids(ret.data), summary(ret)
    assert changed_ids(ret.data) == predicted
    text = Path(env_file).read_text(encoding="utf-8")
    assert text.startswith(ENV_TEXT) and "REDIS_HOST=" in text and "QUEUE_ENABLED=" in text, text

    ret = salt_cli.run("state.apply", "serverfix", minion_tgt=minion_id)
    assert ret.returncode == 0 and changed_ids(ret.data) == [], summary(ret)


def git(*args, cwd):
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=serverfix-test",
            "-c",
            "user.email=test@localhost",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )


def bare_repo_of_checkout(dest):
    """
    A bare repository at ``dest/serverfix.git`` whose ``main`` holds this checkout's working tree
    as it is now (tracked and untracked, not ignored files; symlinks kept as symlinks), committed
    in a temp clone: the real repository's refs and objects are not touched.
    """
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    work = Path(dest) / "work"
    for rel in sorted({name for name in listed if name}):
        source = REPO / rel
        if rel.startswith("tests/node/node_modules") or not os.path.lexists(source):
            continue  # the lead's npm install (a symlink), or a file deleted in the working tree
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        elif source.is_file():
            shutil.copy2(source, target)
    git("init", "-q", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "working tree under test", cwd=work)
    bare = Path(dest) / "serverfix.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=dest)
    return bare
