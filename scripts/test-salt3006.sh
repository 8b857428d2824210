#!/usr/bin/env bash
# The Salt 3006 LTS run (FORMULA's minimum_version): a second venv with salt 3006 on Python 3.10
# (3006's onedir Python), made when missing or when requirements-salt3006.txt changes, then
#   - the functional layer (tests/functional: every module and state through Salt 3006's loader),
#   - one real masterless apply (tests/integration/formula/test_phase2_env.py: a salt-call 3006
#     process runs `state.apply serverfix.env` on a temp .env: preview, apply, re-apply).
# The salt-ssh wrapper (tests/integration/wrapper/) is tested on 3008 only: on 3006 the target's
# serverfix module finds no __utils__["serverfix_defaults.defaults"] inside state.pkg.
# ./scripts/test.sh runs this after the main suite when given no arguments (as CI does). Run as
# root, after scripts/test.sh has installed the apt packages and tests/node (or alone: it does the
# same setup). Extra arguments go to pytest instead of the default paths.
#   SERVERFIX_VENV_3006  the venv (default /var/cache/serverfix/venv-3006)
#   SERVERFIX_PY310      the Python 3.10 to make it with (default: the first that runs of
#                        python3.10 on PATH, /usr/bin, /usr/local/bin, pyenv's 3.10.x)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

venv3006=${SERVERFIX_VENV_3006:-/var/cache/serverfix/venv-3006}

sf_require_root scripts/test-salt3006.sh "(the suite installs packages, swapon, sysctl)"
sf_apt "${SF_TEST_APT[@]}"
sf_node_tools

# the first candidate that really is a Python 3.10 with venv + ensurepip (a pyenv shim on PATH
# may not run; Debian's python3.10 needs python3.10-venv)
find_py310() {
  local candidate pyenv_root=${PYENV_ROOT:-/root/.pyenv}
  for candidate in ${SERVERFIX_PY310:-} python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10 \
                   "$pyenv_root"/versions/3.10.*/bin/python3.10; do
    if "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 10))' \
         2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [ ! -x "$venv3006/bin/pytest" ] || ! cmp -s requirements-salt3006.txt "$venv3006/.requirements-salt3006.txt"; then
  if ! py310=$(find_py310); then
    cat >&2 <<'MSG'
scripts/test-salt3006.sh: no usable Python 3.10 (Salt 3006's onedir runs 3.10; Debian 12 ships 3.11).
Tried: $SERVERFIX_PY310, python3.10 on PATH, /usr/bin/python3.10, /usr/local/bin/python3.10,
pyenv's versions/3.10.*. Install one, e.g. `pyenv install 3.10.13` (or `uv python install 3.10`),
and set SERVERFIX_PY310=/path/to/python3.10 if it is elsewhere.
MSG
    exit 2
  fi
  step "venv $venv3006 (salt 3006 on $("$py310" -V) at $py310)"
  rm -rf "$venv3006"
  "$py310" -m venv "$venv3006"
  "$venv3006/bin/pip" install -q -r requirements-salt3006.txt
  cp requirements-salt3006.txt "$venv3006/.requirements-salt3006.txt"
fi

if [ $# -eq 0 ]; then
  set -- tests/functional tests/integration/formula/test_phase2_env.py
fi
step "pytest on $("$venv3006/bin/salt-call" --version) / $("$venv3006/bin/python" -V): $*"
export PATH="$venv3006/bin:$PATH"
# Salt 3006's importer warnings on Python 3.10 are ignored in pytest.ini (warnings are errors)
exec "$venv3006/bin/python" -m pytest --run-destructive "$@"
