"""
SPM (issue 14, way 3), as docs/distribution.md tells a Salt admin:

    python3 tools/spm_build.py                 # -> build/spm/serverfix-<version>-<release>.spm
    spm create_repo /srv/spm_repo              # a repository holding two builds
    spm update_repo && spm install serverfix   # on the master, from that repository

The package carries the SLS files, every module dir and pillar.example and nothing of
``tests/``, ``replica/``, ``scripts/``. Installed into a real master's spm paths (a private spm
config: ``formula_path``, ``pillar_path``, ``spm_db``... in a temp dir), the master's
``file_roots`` is the installed ``formula_path``; a real minion syncs every module and previews,
applies and re-applies ``state.apply serverfix`` (Phase 2 on a temp ``.env``, see
tests/support/distribution.py). ``spm create_repo`` compares versions with ``int()``
(salt#28030), so FORMULA's version is an integer (YYYYMM, the form Salt's SPM docs give).
"""

import subprocess
import tarfile

import pytest
import yaml

from tests.support import distribution as dist
from tests.support.daemons import started_master, started_minion
from tests.support.loader import import_salt_module
from tests.support.paths import REPO

spm_build = import_salt_module(REPO / "tools" / "spm_build.py", "serverfix_spm_build")

pytestmark = pytest.mark.skip_if_not_root  # the .env's owner/mode handling runs as root

FORMULA = yaml.safe_load((REPO / "FORMULA").read_text(encoding="utf-8"))


def spm(conf_dir, *args):
    proc = subprocess.run(
        [spm_build.spm_binary(), "-c", str(conf_dir), "-y", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("spm")


@pytest.fixture(scope="module")
def repo_dir(workdir):
    """A package directory with two builds: FORMULA's version and the next one."""
    repo = workdir / "repo"
    spm_build.build(repo)
    spm_build.build(repo, version=int(FORMULA["version"]) + 1)
    return repo


@pytest.fixture(scope="module")
def package(repo_dir):
    return repo_dir / f"serverfix-{FORMULA['version']}-{FORMULA['release']}.spm"


@pytest.fixture(scope="module")
def spm_conf(workdir, repo_dir):
    """A master's spm config, every path in the temp dir, with ``repo_dir`` as its repository."""
    conf = workdir / "conf"
    conf.mkdir()
    paths = {
        "formula_path": workdir / "srv" / "spm" / "salt",
        "pillar_path": workdir / "srv" / "spm" / "pillar",
        "reactor_path": workdir / "srv" / "spm" / "reactor",
        "spm_db": workdir / "cache" / "spm" / "packages.db",
        "spm_cache_dir": workdir / "cache" / "spm",
        "spm_build_dir": workdir / "spm_build",
        "spm_share_dir": workdir / "share" / "spm",
        "spm_logfile": workdir / "spm.log",
        "spm_repos_config": conf / "spm.repos",
    }
    (conf / "spm").write_text(
        yaml.safe_dump({k: str(v) for k, v in paths.items()}), encoding="utf-8"
    )
    # a repository in spm.repos.d/*.repo: salt 3008's spm cannot read a spm.repos file itself
    # (it opens "<spm_repos_config>.d/<spm_repos_config>"), so that file must not exist
    (conf / "spm.repos.d").mkdir()
    (conf / "spm.repos.d" / "serverfix.repo").write_text(
        yaml.safe_dump({"serverfix-test": {"url": f"file://{repo_dir}"}}), encoding="utf-8"
    )
    return conf, paths


def test_formula_version_is_what_spm_accepts():
    # spm create_repo and spm install compare versions and releases as integers
    assert isinstance(FORMULA["version"], int) and isinstance(FORMULA["release"], int), FORMULA
    assert FORMULA["top_level_dir"] == FORMULA["name"] == "serverfix"


def test_package_contents(package):
    with tarfile.open(package, "r:bz2") as tar:
        members = {m.name: m for m in tar.getmembers()}
    files = sorted(name for name, m in members.items() if m.isfile() and name != "serverfix")
    # the list and size for the release notes (pytest -s shows them)
    print(f"\n{package.name}: {package.stat().st_size} bytes, {len(files)} files")
    print("\n".join(files))
    names = {name.split("/", 1)[1] for name in files}
    sls = {
        f"serverfix/{path.name}"
        for path in (REPO / "formula" / "serverfix").iterdir()
        if path.is_file()
    }
    assert sls <= names, sorted(sls - names)
    for modules in dist.expected_sync().values():
        for name in modules:
            kind, stem = name.split(".", 1)
            assert f"_{kind}/{stem}.py" in names, name
    assert {"FORMULA", "pillar.example", "README.md", "LICENSE", "CHANGELOG.md"} <= names
    for part in ("tests/", "replica/", "scripts/", "tools/", "formula/", ".git", "__pycache__"):
        assert not [name for name in names if part in name], part
    assert not [m.name for m in members.values() if m.issym() or m.islnk()]


@pytest.fixture(scope="module")
def create_repo(repo_dir, spm_conf):
    return spm(spm_conf[0], "create_repo", str(repo_dir))


@pytest.fixture(scope="module")
def spm_install(create_repo, spm_conf):
    """``spm update_repo`` + ``spm install serverfix`` on the master: [(args, process)]."""
    assert create_repo.returncode == 0, create_repo.stdout + create_repo.stderr
    steps = (("update_repo",), ("install", "serverfix"))
    return [(args, spm(spm_conf[0], *args)) for args in steps]


def test_create_repo_with_two_versions(create_repo, repo_dir):
    assert create_repo.returncode == 0, create_repo.stdout + create_repo.stderr
    metadata = yaml.safe_load((repo_dir / "SPM-METADATA").read_text(encoding="utf-8"))
    newest = f"serverfix-{int(FORMULA['version']) + 1}-{FORMULA['release']}.spm"
    assert metadata["serverfix"]["filename"] == newest, metadata


def test_create_repo_fails_on_dotted_versions(workdir, spm_conf):
    """Why FORMULA's version is an integer: two builds of '0.1.0' and '0.2.0' crash create_repo."""
    conf, _ = spm_conf
    dotted = workdir / "dotted"
    spm_build.build(dotted, version="0.1.0")
    spm_build.build(dotted, version="0.2.0")
    proc = spm(conf, "create_repo", str(dotted))
    assert "invalid literal for int()" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (dotted / "SPM-METADATA").exists()


def test_spm_install_from_the_repository(spm_conf, spm_install):
    conf, paths = spm_conf
    for args, proc in spm_install:
        assert proc.returncode == 0, f"spm {args}: {proc.stdout}{proc.stderr}"
    installed = paths["formula_path"]
    for name in ("init.sls", "map.jinja", "defaults.yaml", "env.sls"):
        assert (installed / "serverfix" / name).is_file(), name
    for key, names in dist.expected_sync().items():
        for name in names:
            assert (installed / f"_{key}" / f"{name.split('.', 1)[1]}.py").is_file(), name
    assert (paths["pillar_path"] / "serverfix.sls.orig").read_bytes() == (
        REPO / "pillar.example"
    ).read_bytes()
    assert not [p for p in installed.rglob("*") if p.name in ("tests", "replica", "scripts")]
    proc = spm(conf, "info", "serverfix")
    assert f"Version: {int(FORMULA['version']) + 1}" in proc.stdout, proc.stdout


@pytest.fixture(scope="module")
def spm_settings(workdir):
    return dist.settings(workdir)


@pytest.fixture(scope="module")
def spm_master(salt_factories, make_pillar, spm_conf, spm_install, spm_settings):
    del spm_install  # requested so the formula is installed before the master serves it
    _, paths = spm_conf
    with started_master(
        salt_factories,
        "spm-master",
        {
            "file_roots": {"base": [str(paths["formula_path"])]},
            "pillar_roots": {"base": [str(make_pillar("spm", spm_settings))]},
        },
    ) as master:
        yield master


@pytest.fixture(scope="module")
def spm_minion(spm_master):
    with started_minion(spm_master, "spm-minion") as minion:
        yield minion


@pytest.fixture(scope="module")
def salt_cli(spm_master):
    return spm_master.salt_cli(timeout=300)


def test_installed_formula_syncs_every_module(salt_cli, spm_minion):
    ret = salt_cli.run("saltutil.sync_all", minion_tgt=spm_minion.id)
    dist.assert_synced_everything(ret)


def test_installed_formula_applies(salt_cli, spm_minion, spm_settings):
    dist.assert_preview_then_apply(salt_cli, spm_minion.id, spm_settings["dotenv"]["file"])
