#!/usr/bin/env bash
# scripts/replica.sh build|golden|image|up|down|reboot|ssh CMD...|env|status|clean|fleet up N|down|env|status
#
# The local replica of the server: a throwaway Debian 12 host with systemd as PID 1 (systemd-nspawn),
# sshd, Node.js, npm and pm2 (`pm2 startup systemd`), running the replica backend stand-in
# (replica/backend) under pm2 in the runbook's "before" state: no Redis, no swap, no queue keys in
# the .env, prisma-studio running, backend in its slow synchronous fallback mode.
#
#   build   debootstrap + packages + pm2 + the stand-in's node_modules -> base-<key>.tar.zst (cached, ~3 min)
#   golden  base + stand-in sources + "before" fixture (pm2 processes saved) -> golden-<key>.img (cached, ~10 s)
#   image   build and golden, only what is missing or stale
#   up      boot a fresh copy of the golden image (~3 s); builds what is missing or stale first
#   down    stop it and undo everything on the host (swap, sysctls, NAT, cgroups, loop mount, run dir)
#   reboot  reboot the guest and wait until it is back
#   ssh     run a command in the guest as root (pinned host keys)
#   env     print REPLICA_* facts (address, key, known_hosts) for tools and tests
#   fleet   up N | down | env | status: $REPLICA_FLEET-1 ... -N side by side and a salt-master address
#
# The guest has its own network namespace (veth + NAT out of the default route), so its Redis on 6379
# and its app ports never collide with the host's. Swap and vm.* sysctls are kernel-global: whatever the
# formula does in the guest hits the host kernel, so `down` swaps off the guest's swap files and the
# last replica's `down` restores the sysctls the first one recorded (host.sh). A lock per name:
# replicas of other names (and subnets) run side by side; REPLICA_LOCK_WAIT: seconds to wait for the same name.
#
# The parts, one job each, sourced below: scripts/replica/image.sh (cache keys, build, golden),
# net.sh (veth + NAT), cgroup.sh (nspawn's own cgroup, the memory limit), lxcfs.sh (the guest's
# /proc/meminfo), sysctl.sh (host sysctls, guest swap), host.sh (what the replicas of this host
# share: the recorded sysctls, the members), fleet.sh (N replicas and the master address), boot.sh
# (the boot loop, up, down, reboot, env).
#
# The guest has the server's RAM (REPLICA_MEMORY, default 4G): a memory cgroup limit on the boot loop,
# and /proc/meminfo (with cpuinfo, stat, uptime) from an lxcfs that `up` starts for it. Swap lines in
# its /etc/fstab are switched on at boot (replica-swap.service, sysctl.sh) as the VM's systemd would.
#
# Host needs root, debootstrap, systemd-container, zstd, e2fsprogs, nftables, iproute2, lxcfs (scripts/lib/setup.sh).
# Knobs: REPLICA_DIR (cache + run dirs, default /var/cache/serverfix/replica), REPLICA_NAME (default replica),
# REPLICA_SUBNET (guest 10.231.<n>.2, default 7; a running replica's own is recorded), REPLICA_LOCK_WAIT
# (seconds, default 0), REPLICA_LOCK, REPLICA_HOST_DIR (default /run/serverfix-replica), REPLICA_FLEET
# (default hetzner), REPLICA_FLEET_SUBNET_BASE (20), REPLICA_FLEET_MASTER_IP (10.231.0.1),
# REPLICA_FLEET_MASTER_IF (sfmaster0),
# REPLICA_MEMORY (the guest's RAM: 4G, 8G, ...; off = no limit, this host's /proc/meminfo),
# DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR (default: the ones this host's apt uses), NPM_REGISTRY (default:
# this host's npm config).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/scripts/replica.sh"
W=${REPLICA_DIR:-/var/cache/serverfix/replica}
NAME=${REPLICA_NAME:-replica}
LOCK_WAIT=${REPLICA_LOCK_WAIT:-0}
RUN=$W/run-$NAME
R=$RUN/rootfs
KEY=$W/id_ed25519
LOCK=${REPLICA_LOCK:-/run/lock/serverfix-replica-$NAME.lock}   # per name: another name runs side by side
HOST_DIR=${REPLICA_HOST_DIR:-/run/serverfix-replica}   # one kernel: what every replica of this host shares
SYSCTL_ORIG=$HOST_DIR/sysctl.orig                      # the host's sysctls, as the first replica found them
IMG_SIZE=${REPLICA_IMG_SIZE:-6G}
NFT_TABLE=serverfix-$NAME
APP=/var/www/intranet/backend                          # where the server keeps the backend
SUITE=bookworm
PM2_VERSION=7.0.4
BUILD_REV=1                                            # bump when build() changes what it produces
BASE_PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,iproute2,sudo,ca-certificates,procps,less
EXTRA_PACKAGES="nodejs npm python3-venv"               # python3-venv: a salt-minion venv for the master/minion test
SYSCTL_KEYS="vm.swappiness vm.vfs_cache_pressure vm.overcommit_memory net.ipv4.ip_forward"   # knobs we or the formula touch
MEMORY=${REPLICA_MEMORY:-4G}                           # the server's RAM (the runbook's 4 GB VM); off: this host's
FLEET=${REPLICA_FLEET:-hetzner}                        # fleet members: $FLEET-1 ... $FLEET-N
FLEET_SUBNET_BASE=${REPLICA_FLEET_SUBNET_BASE:-20}     # member i gets subnet base + i
FLEET_MASTER_IP=${REPLICA_FLEET_MASTER_IP:-10.231.0.1} # the salt-master's address on the host
FLEET_MASTER_IF=${REPLICA_FLEET_MASTER_IF:-sfmaster0}  # the dummy interface that carries it

set_subnet() {  # $1: the guest's subnet n (10.231.<n>.0/30): addresses, veth and ssh follow from it
  SUBNET=$1
  IP=10.231.$SUBNET.2
  HOST_IP=10.231.$SUBNET.1
  VETH=sfrep$SUBNET
  SSH=(ssh -i "$KEY" -o BatchMode=yes -o ConnectTimeout=3 -o StrictHostKeyChecking=yes
       -o "UserKnownHostsFile=$RUN/known_hosts" -o LogLevel=ERROR "root@$IP")
}
# a running replica's own subnet (recorded by `up`) wins: `env`, `ssh`, `down` need no REPLICA_SUBNET
set_subnet "$(cat "$RUN/subnet" 2>/dev/null || echo "${REPLICA_SUBNET:-7}")"
NSPAWN=(systemd-nspawn -q --register=no --keep-unit --link-journal=no --resolv-conf=copy-host)
export SYSTEMD_NSPAWN_API_VFS_WRITABLE=yes   # /proc/sys writable, else `sysctl -w` fails in the guest

say() { printf '[replica] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# shellcheck source=replica/image.sh
. "$REPO/scripts/replica/image.sh"
# shellcheck source=replica/net.sh
. "$REPO/scripts/replica/net.sh"
# shellcheck source=replica/cgroup.sh
. "$REPO/scripts/replica/cgroup.sh"
# shellcheck source=replica/lxcfs.sh
. "$REPO/scripts/replica/lxcfs.sh"
# shellcheck source=replica/sysctl.sh
. "$REPO/scripts/replica/sysctl.sh"
# shellcheck source=replica/host.sh
. "$REPO/scripts/replica/host.sh"
# shellcheck source=replica/fleet.sh
. "$REPO/scripts/replica/fleet.sh"
# shellcheck source=replica/boot.sh
. "$REPO/scripts/replica/boot.sh"

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, systemd-nspawn, loop mounts, nftables)"
case ${1:-} in
  build) build ;;
  golden) golden ;;
  image) if [ -f "$(GOLDEN)" ]; then say "image: $(GOLDEN) (cached)"; else
      mkdir -p "$W"; exec 8>"$W/image.lock"; flock -w 900 8 || die "another process builds the image ($W/image.lock)"
      if [ -f "$(GOLDEN)" ]; then say "image: $(GOLDEN) (cached)"; else golden; fi
    fi ;;
  up) up ;;
  down) down ;;
  boot) boot ;;
  reboot) reboot_guest ;;
  ssh) shift; exec "${SSH[@]}" "$@" ;;
  env) env_facts ;;
  status) if [ -f "$RUN/nspawn.pid" ]; then say "$NAME is up: root@$IP"; exit 0; fi; say "$NAME is down"; exit 3 ;;
  fleet) shift; fleet "$@" ;;
  clean) down; rm -f "$W"/base-*.tar.zst "$W"/golden-*.img ;;
  *) echo "usage: $0 build|golden|image|up|down|reboot|ssh CMD...|env|status|clean|fleet up N|down|env|status" >&2; exit 2 ;;
esac
