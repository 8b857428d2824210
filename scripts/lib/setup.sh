# shellcheck shell=bash
# Shared setup for scripts/test.sh, run-replica.sh and proof-report.sh (sourced, from the repo
# root): what a fresh Debian 12 machine needs, installed only when missing.
#   sf_usage SCRIPT           print the script's header comment (its help)
#   sf_replica_ready CMD      root, the replica's apt packages, the venv and the cached replica image
#   sf_require_root CMD WHY   stop unless root
#   sf_apt PKG...             apt-get install the missing packages (one apt-get update first)
#   sf_venv                   the venv at $venv from requirements-test.txt (re-made when the file changes)
#   sf_node_tools             tests/node: npm dotenv + pm2, locally (never global)

# outside the repo: Salt's fileserver must not walk a virtualenv (pitfall: slow state runs)
venv=${SERVERFIX_VENV:-/var/cache/serverfix/venv}

# the replica host (scripts/replica.sh) and salt-ssh from the venv
SF_REPLICA_APT=(python3-venv openssh-client debootstrap systemd-container zstd e2fsprogs nftables iproute2 lxcfs
                procps util-linux)
# shellcheck disable=SC2034  # used by scripts/test.sh
# the whole suite: the replica's, plus sshd for the integration tests, node/npm for tests/node, file
# systems for the swap tests, redis-tools (the redis binary for tests' own Redis processes, no
# service), acl (setfacl/getfacl, for tests that set or read a file's ACL)
SF_TEST_APT=("${SF_REPLICA_APT[@]}" openssh-server openssh-sftp-server nodejs npm btrfs-progs xfsprogs redis-tools
             acl)

step() { printf '\n==> %s\n' "$*"; }

sf_usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1"; }

sf_replica_ready() {
  sf_require_root "$1" "(systemd-nspawn, loop mounts, nftables, swapon in the replica)"
  sf_apt "${SF_REPLICA_APT[@]}"
  sf_venv
  step "replica image (debootstrap + Node.js + pm2 + the backend stand-in; cached after the first build)"
  bash scripts/replica.sh image
}

sf_require_root() {
  if [ "$(id -u)" != 0 ]; then echo "$1: run as root $2" >&2; exit 2; fi
}

sf_apt() {
  local p missing=() keep=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  # a machine whose node/npm come from elsewhere (nodesource, nvm) keeps them
  if command -v node >/dev/null && command -v npm >/dev/null; then
    for p in "${missing[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || keep+=("$p"); done
    missing=("${keep[@]}")
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

sf_venv() {
  if [ ! -x "$venv/bin/pytest" ] || ! cmp -s requirements-test.txt "$venv/.requirements-test.txt"; then
    step "venv $venv (salt 3008.4, pytest-salt-factories, jinja2)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r requirements-test.txt
    cp requirements-test.txt "$venv/.requirements-test.txt"
  fi
}

sf_node_tools() {
  if ! cmp -s tests/node/package.json tests/node/node_modules/.package.json.installed 2>/dev/null; then
    step "npm install (local, never global): dotenv, pm2"
    (cd tests/node && npm install --no-fund --no-audit --no-progress --loglevel=error \
       && cp package.json node_modules/.package.json.installed)
  fi
}
