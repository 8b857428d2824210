#!/usr/bin/env bash
# The test command (README.md): installs everything the suite needs on a fresh Debian 12
# machine, then runs the whole suite. Extra arguments go to pytest (e.g. -k redis, tests/unit).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# outside the repo: Salt's fileserver must not walk a virtualenv (pitfall: slow state runs)
venv=${SERVERFIX_VENV:-/var/cache/serverfix/venv}

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then echo "scripts/test.sh: run as root (the suite installs packages, swapon, sysctl)" >&2; exit 2; fi

apt_packages=(python3-venv openssh-server openssh-client openssh-sftp-server debootstrap systemd-container
              zstd e2fsprogs nftables iproute2 procps util-linux nodejs npm btrfs-progs xfsprogs
              redis-tools)  # redis-tools: the redis binary for tests' own Redis processes (no service)
missing=()
for p in "${apt_packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
# a machine whose node/npm come from elsewhere (nodesource, nvm) keeps them
if command -v node >/dev/null && command -v npm >/dev/null; then
  keep=(); for p in "${missing[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || keep+=("$p"); done; missing=("${keep[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/pytest" ] || ! cmp -s requirements-test.txt "$venv/.requirements-test.txt"; then
  step "venv $venv (salt 3008.4, pytest-salt-factories, jinja2)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r requirements-test.txt
  cp requirements-test.txt "$venv/.requirements-test.txt"
fi

if ! cmp -s tests/node/package.json tests/node/node_modules/.package.json.installed 2>/dev/null; then
  step "npm install (local, never global): dotenv, pm2"
  (cd tests/node && npm install --no-fund --no-audit --no-progress --loglevel=error \
     && cp package.json node_modules/.package.json.installed)
fi

step "pytest $*"
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" -m pytest "$@"
