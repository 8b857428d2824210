#!/usr/bin/env bash
# The Salt 3006 LTS run (FORMULA's minimum_version): a second venv with salt 3006 on Python 3.10
# (3006's onedir Python), made when missing or when requirements-salt3006.txt changes, then
#   - the functional layer (tests/functional: every module and state through Salt 3006's loader),
#   - one real masterless apply (tests/integration/test_dotenv_salt_call.py: a salt-call 3006
#     process runs `state.apply serverfix.env` on a temp .env: preview, apply, re-apply),
# (tests/integration/test_wrapper_salt_ssh.py is not in the default run yet: on 3006 the target's
# serverfix module finds no __utils__["serverfix_defaults.defaults"] inside state.pkg.)
# Run as root, after scripts/test.sh has installed the apt packages and tests/node (or alone: it
# does the same setup). Extra arguments go to pytest instead of the default paths.
#   SERVERFIX_VENV_3006  the venv (default /var/cache/serverfix/venv-3006)
#   SERVERFIX_PY310      the Python to make it with (default: python3.10 on PATH, else pyenv's 3.10)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

venv3006=${SERVERFIX_VENV_3006:-/var/cache/serverfix/venv-3006}

sf_require_root scripts/test-salt3006.sh "(the suite installs packages, swapon, sysctl)"
sf_apt "${SF_TEST_APT[@]}"
sf_node_tools

# the first candidate that really is a Python 3.10 (a pyenv shim on PATH may not run)
py310=
for candidate in ${SERVERFIX_PY310:-} python3.10 /usr/bin/python3.10 /root/.pyenv/versions/3.10.*/bin/python3; do
  if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
    py310=$candidate; break
  fi
done
if [ ! -x "$venv3006/bin/pytest" ] || ! cmp -s requirements-salt3006.txt "$venv3006/.requirements-salt3006.txt"; then
  if [ -z "$py310" ]; then
    echo "scripts/test-salt3006.sh: no Python 3.10 (set SERVERFIX_PY310): Salt 3006's onedir runs 3.10" >&2
    exit 2
  fi
  step "venv $venv3006 (salt 3006 on $("$py310" -V))"
  rm -rf "$venv3006"
  "$py310" -m venv "$venv3006"
  "$venv3006/bin/pip" install -q -r requirements-salt3006.txt
  cp requirements-salt3006.txt "$venv3006/.requirements-salt3006.txt"
fi

if [ $# -eq 0 ]; then
  set -- tests/functional tests/integration/test_dotenv_salt_call.py
fi
step "pytest on $("$venv3006/bin/salt-call" --version) / $("$venv3006/bin/python" -V): $*"
export PATH="$venv3006/bin:$PATH"
# Salt 3006's importers warn on Python 3.10 (pytest.ini turns warnings into errors)
exec "$venv3006/bin/python" -m pytest --run-destructive \
  -W "ignore:TornadoImporter.find_spec() not found:ImportWarning" \
  -W "ignore:the load_module() method is deprecated:DeprecationWarning" "$@"
