#!/usr/bin/env bash
# scripts/replica.sh build|golden|image|up|down|reboot|ssh CMD...|env|status|clean
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
#
# The guest has its own network namespace (veth + NAT out of the default route), so its Redis on 6379
# and its app ports never collide with the host's. Swap and vm.* sysctls are kernel-global: whatever the
# formula does in the guest hits the host kernel, so `down` swaps off the guest's swap files and restores
# the sysctls it recorded at `up`. One replica at a time (a lock), unless REPLICA_LOCK_WAIT says to wait.
#
# Host needs root, debootstrap, systemd-container, zstd, e2fsprogs, nftables, iproute2 (scripts/lib/setup.sh).
# Knobs: REPLICA_DIR (cache + run dirs, default /var/cache/serverfix/replica), REPLICA_NAME (default replica),
# REPLICA_SUBNET (guest 10.231.<n>.2, default 7), REPLICA_LOCK_WAIT (seconds, default 0),
# DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR (default: the ones this host's apt uses), NPM_REGISTRY (default:
# this host's npm config).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/scripts/replica.sh"
W=${REPLICA_DIR:-/var/cache/serverfix/replica}
NAME=${REPLICA_NAME:-replica}
SUBNET=${REPLICA_SUBNET:-7}
LOCK_WAIT=${REPLICA_LOCK_WAIT:-0}
RUN=$W/run-$NAME
R=$RUN/rootfs
KEY=$W/id_ed25519
LOCK=${REPLICA_LOCK:-/run/lock/serverfix-replica.lock}   # machine-wide: swap and vm.* are kernel-global
IMG_SIZE=${REPLICA_IMG_SIZE:-6G}
IP=10.231.$SUBNET.2
HOST_IP=10.231.$SUBNET.1
VETH=sfrep$SUBNET
NFT_TABLE=serverfix-$NAME
APP=/var/www/intranet/backend                          # where the server keeps the backend
SUITE=bookworm
PM2_VERSION=7.0.4
BUILD_REV=1                                            # bump when build() changes what it produces
BASE_PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,iproute2,sudo,ca-certificates,procps,less
EXTRA_PACKAGES="nodejs npm python3-venv"               # python3-venv: a salt-minion venv for the master/minion test
SYSCTL_KEYS="vm.swappiness vm.vfs_cache_pressure net.ipv4.ip_forward"   # host-global knobs we or the formula touch

SSH=(ssh -i "$KEY" -o BatchMode=yes -o ConnectTimeout=3 -o StrictHostKeyChecking=yes
     -o "UserKnownHostsFile=$RUN/known_hosts" -o LogLevel=ERROR "root@$IP")
NSPAWN=(systemd-nspawn -q --register=no --keep-unit --link-journal=no --resolv-conf=copy-host)
export SYSTEMD_NSPAWN_API_VFS_WRITABLE=yes   # /proc/sys writable, else `sysctl -w` fails in the guest

say() { printf '[replica] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# --- cache keys: an image is rebuilt when what went into it changed --------------------------------
sha() { sha256sum | cut -c1-12; }
base_key() {
  { echo "$BUILD_REV $SUITE $BASE_PACKAGES $EXTRA_PACKAGES pm2@$PM2_VERSION"; cat "$REPO/replica/backend/package.json"; } | sha
}
golden_key() {
  { base_key; cat "$SELF"; (cd "$REPO" && find replica -type f ! -path '*/node_modules/*' -print0 | sort -z | xargs -0 sha256sum); } | sha
}
TARBALL() { echo "$W/base-$(base_key).tar.zst"; }
GOLDEN() { echo "$W/golden-$(golden_key).img"; }

# --- registries: the ones this host already uses (never hard-coded) --------------------------------
apt_sources() {  # "URI SUITE..." lines from deb822 .sources and classic .list files
  awk '/^[[:space:]]*$/ { if (u && s) print u, s; u = s = ""; next }
       /^URIs:/ { u = $2 } /^Suites:/ { $1 = ""; s = $0 }
       END { if (u && s) print u, s }' /etc/apt/sources.list.d/*.sources 2>/dev/null
  sed -E 's/\[[^]]*\]//' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" { print $2, $3 }'
}
debian_mirror() {  # $1: suite to look for (bookworm or bookworm-security)
  apt_sources | awk -v want="$1" '{ for (i = 2; i <= NF; i++) if ($i == want) { print $1; exit } }'
}
MIRROR=${DEBIAN_MIRROR:-$(debian_mirror $SUITE)}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(debian_mirror $SUITE-security)}
NPM_REGISTRY=${NPM_REGISTRY:-$(command -v npm >/dev/null && npm config get registry 2>/dev/null)}

# --- cgroups: this host may not run systemd; give nspawn its own cgroup so it leaves nothing behind -----
own_cgroup() {
  local h
  for h in systemd unified; do
    [ -d /sys/fs/cgroup/$h ] || continue
    mkdir -p "/sys/fs/cgroup/$h/serverfix-$1" && echo "$BASHPID" > "/sys/fs/cgroup/$h/serverfix-$1/cgroup.procs"
  done
}
drop_cgroup() {
  local h d
  for h in systemd unified; do
    d=/sys/fs/cgroup/$h/serverfix-$1
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  true
}

# --- build: debootstrap + packages + pm2 + the stand-in's npm packages -> base tarball -------------------
build() {
  local B=$W/build-$NAME tarball t0=$SECONDS
  tarball=$(TARBALL)
  [ -n "$MIRROR" ] || die "no Debian mirror found in this host's apt sources: set DEBIAN_MIRROR"
  mkdir -p "$W" && rm -rf "$B"
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -f "$KEY" -C serverfix-replica
  say "build: debootstrap $SUITE (~90 s, log $W/build.log)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$B" "$MIRROR" >"$W/build.log" 2>&1 ||
    { tail -20 "$W/build.log" >&2; die "debootstrap failed (log $W/build.log)"; }
  {
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    [ -n "$SECURITY_MIRROR" ] && echo "deb $SECURITY_MIRROR $SUITE-security main"
  } > "$B/etc/apt/sources.list"
  install -d -m700 "$B/root/.ssh" && install -m600 "$KEY.pub" "$B/root/.ssh/authorized_keys"
  printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' > "$B/etc/ssh/sshd_config.d/10-replica.conf"
  chroot "$B" systemctl mask -q console-getty.service getty@tty1.service
  # a TLS-intercepting proxy's CAs, if this host has any: npm in the guest must trust them too
  cp /usr/local/share/ca-certificates/*.crt "$B/usr/local/share/ca-certificates/" 2>/dev/null
  install -d "$B$APP" && cp "$REPO/replica/backend/package.json" "$B$APP/"
  say "build: nodejs, npm, python3-venv, pm2@$PM2_VERSION (global, as on the server), the stand-in's npm packages (~60 s)"
  ( own_cgroup "build-$NAME"
    exec "${NSPAWN[@]}" -D "$B" --setenv=npm_config_registry="$NPM_REGISTRY" \
      --setenv=NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt sh -ec "
      update-ca-certificates >/dev/null 2>&1
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $EXTRA_PACKAGES >/dev/null
      [ -n \"\$npm_config_registry\" ] || unset npm_config_registry
      npm install -g --no-fund --no-audit --no-progress --loglevel=error pm2@$PM2_VERSION >/dev/null
      pm2 startup systemd -u root --hp /root >/dev/null
      cd $APP && npm install --omit=dev --no-fund --no-audit --no-progress --loglevel=error >/dev/null
      rm -f package-lock.json
      pm2 kill >/dev/null 2>&1 || true
      apt-get clean; rm -rf /var/lib/apt/lists/* /root/.npm /root/.pm2" ) >>"$W/build.log" 2>&1 ||
    { drop_cgroup "build-$NAME"; tail -20 "$W/build.log" >&2; die "package install in the guest failed (log $W/build.log)"; }
  drop_cgroup "build-$NAME"
  [ -f "$B/etc/systemd/system/pm2-root.service" ] || die "pm2 startup systemd wrote no pm2-root.service (log $W/build.log)"
  : > "$B/etc/machine-id"   # a fresh machine-id at every boot
  say "build: packing $tarball"
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$B" -cf - . | zstd -T0 -3 -q -f -o "$tarball.tmp" &&
    mv "$tarball.tmp" "$tarball" || die "packing the image failed"
  rm -rf "$B"
  find "$W" -maxdepth 1 -name 'base-*.tar.zst' ! -path "$tarball" -delete   # only the current one is kept
  say "build: done in $((SECONDS - t0)) s"
}

# --- golden: base + stand-in + "before" fixture -> ext4 image ---------------------------------------------
golden() {
  local tarball golden S t0=$SECONDS rc
  tarball=$(TARBALL); golden=$(GOLDEN)
  [ -f "$tarball" ] || build || return 1
  say "golden: $golden"
  S=$(mktemp -d /dev/shm/serverfix-golden.XXXXXX)   # tmpfs: unpacking 40k small files on ext4 is slow here
  zstd -dc "$tarball" | tar --numeric-owner --xattrs --xattrs-include='*' -C "$S" -xf - || { rm -rf "$S"; die "unpacking $tarball failed"; }
  cp -r "$REPO/replica/backend/src" "$REPO/replica/backend/tools" "$REPO/replica/backend/package.json" "$S$APP/"
  install -m 0640 "$REPO/replica/fixture/backend.env" "$S$APP/.env"
  echo "$NAME" > "$S/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost ip6-loopback\n' "$NAME" > "$S/etc/hosts"
  # the "before" state: both apps started by hand under pm2 and saved, as the server's operator did.
  # A bare environment, so pm2 stores no queue keys in its dump (they would shadow the .env).
  ( own_cgroup "golden-$NAME"
    exec "${NSPAWN[@]}" -D "$S" --private-network env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin \
      PM2_HOME=/root/.pm2 sh -ec "cd $APP
      pm2 start src/server.js --name intranet-backend
      pm2 start tools/prisma-studio-standin.js --name prisma-studio
      sleep 2
      pm2 save
      pm2 kill
      rm -f /root/.pm2/logs/* /root/.pm2/pm2.log" ) >"$W/golden.log" 2>&1
  rc=$?; drop_cgroup "golden-$NAME"
  [ $rc = 0 ] || { rm -rf "$S"; tail -20 "$W/golden.log" >&2; die "saving the pm2 processes failed (log $W/golden.log)"; }
  rm -f "$golden.tmp" && truncate -s "$IMG_SIZE" "$golden.tmp" && mkfs.ext4 -q -F -L sf-replica -d "$S" "$golden.tmp" &&
    mv "$golden.tmp" "$golden"; rc=$?; rm -rf "$S"
  [ $rc = 0 ] || die "making the ext4 image failed"
  find "$W" -maxdepth 1 -name 'golden-*.img*' ! -path "$golden" -delete
  say "golden: done in $((SECONDS - t0)) s"
}

# --- host-global state the guest can change ---------------------------------------------------------------
guest_sysctl_keys() {  # keys the guest's own sysctl.d files set at boot (net.* stay in its namespace)
  cat "$R"/usr/lib/sysctl.d/*.conf "$R"/etc/sysctl.d/*.conf "$R"/etc/sysctl.conf 2>/dev/null |
    sed -E 's/[#;].*//; s/^-//; s/=.*//; s/[[:space:]]//g' | grep -v -e '^$' -e '^net\.' -e '\*' | sort -u
}
swapoff_guest() {
  # Swap outlives the container. /proc/swaps names the guest's file as the guest sees it (/swapfile):
  # its mount is not in the host's tree. The same inode is reachable here under $R, and swapoff
  # matches the file, not the name.
  awk 'NR > 1 && $2 == "file" { print $1 }' /proc/swaps | while read -r f; do
    [ -f "$R$f" ] && swapoff "$R$f" 2>/dev/null && say "swapoff $f (guest)"
  done
  true
}

# --- boot loop (detached): nspawn exits 133 when the guest reboots -> start it again ------------------------
boot() {
  own_cgroup "$NAME"
  echo $$ > "$RUN/boot.pid"
  local rc
  while :; do
    "${NSPAWN[@]}" --boot -D "$R" -M "$NAME" --console=passive --system-call-filter=@swap \
      --network-veth-extra="$VETH:host0" >>"$RUN/nspawn.log" 2>&1 </dev/null &
    echo $! > "$RUN/nspawn.pid"
    veth_up
    wait $!; rc=$?
    echo "nspawn exit $rc" >>"$RUN/nspawn.log"
    swapoff_guest
    [ "$rc" = 133 ] && [ ! -e "$RUN/stop" ] || break
  done
  rm -f "$RUN/nspawn.pid"
}
veth_up() {  # host side of the veth: address + NAT, so apt/npm in the guest reach the registries
  local eg i
  eg=$(ip route show default | awk '{ print $5; exit }')
  for i in $(seq 100); do ip link show "$VETH" >/dev/null 2>&1 && break; sleep 0.05; done
  ip addr replace "$HOST_IP/30" dev "$VETH" && ip link set "$VETH" up
  if ! nft list table ip "$NFT_TABLE" >/dev/null 2>&1; then
    nft add table ip "$NFT_TABLE"
    nft add chain ip "$NFT_TABLE" post '{ type nat hook postrouting priority 100 ; }'
    nft add rule ip "$NFT_TABLE" post ip saddr "10.231.$SUBNET.0/30" oifname "$eg" masquerade
  fi
  sysctl -qw net.ipv4.ip_forward=1
}

up() {
  local golden end t0=$SECONDS k
  golden=$(GOLDEN)
  [ -f "$golden" ] || golden || return 1
  down
  mkdir -p "$W" "$(dirname "$LOCK")"
  exec 9>"$LOCK"
  if ! flock -w "$LOCK_WAIT" 9; then
    die "another replica is running ($(cat "$LOCK.owner" 2>/dev/null)); stop it first: REPLICA_NAME=<name> $SELF down"
  fi
  echo "$NAME (subnet $SUBNET)" > "$LOCK.owner"
  mkdir -p "$R"
  cp --sparse=always "$golden" "$RUN/root.img" && mount -o loop "$RUN/root.img" "$R" || die "mounting $RUN/root.img failed"
  for k in $SYSCTL_KEYS $(guest_sysctl_keys); do
    [ -w "/proc/sys/${k//.//}" ] && echo "$k=$(sysctl -n "$k")"
  done > "$RUN/host-sysctl.orig"
  # static guest address: systemd-networkd would wait forever for udev here (/sys is writable)
  printf '[Unit]\nBefore=network.target ssh.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/sbin/ip link set host0 up\nExecStart=/sbin/ip addr replace %s/30 dev host0\nExecStart=/sbin/ip route replace default via %s\n[Install]\nWantedBy=multi-user.target\n' \
    "$IP" "$HOST_IP" > "$R/etc/systemd/system/replica-net.service"
  chroot "$R" systemctl enable -q replica-net.service
  # pin the guest's host keys (no trust-on-first-use)
  for k in "$R"/etc/ssh/ssh_host_*_key.pub; do echo "$IP $(cut -d' ' -f1,2 "$k")"; done > "$RUN/known_hosts"
  ip link delete "$VETH" 2>/dev/null   # a leftover of a killed run would make nspawn fail
  setsid bash "$SELF" boot </dev/null >/dev/null 2>&1 &     # holds the lock (fd 9) while the guest runs
  exec 9>&-
  end=$((SECONDS + 90))
  while [ $SECONDS -lt $end ]; do
    if "${SSH[@]}" 'systemctl is-system-running --wait >/dev/null 2>&1; true' 2>/dev/null; then
      say "up: root@$IP (key $KEY) in $((SECONDS - t0)) s"
      return 0
    fi
    sleep 0.3
  done
  tail -30 "$RUN/nspawn.log" >&2
  die "the replica did not answer on ssh within 90 s"
}

down() {
  local p b i
  [ -d "$RUN" ] || return 0
  touch "$RUN/stop"
  if [ -f "$RUN/nspawn.pid" ]; then
    p=$(cat "$RUN/nspawn.pid")
    kill -TERM "$p" 2>/dev/null     # nspawn turns SIGTERM into a clean guest halt
    for i in $(seq 150); do [ -f "$RUN/nspawn.pid" ] && kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    [ -f "$RUN/nspawn.pid" ] && kill -KILL "$p" 2>/dev/null && sleep 1
  fi
  b=$(cat "$RUN/boot.pid" 2>/dev/null) && for i in $(seq 50); do kill -0 "$b" 2>/dev/null || break; sleep 0.1; done
  swapoff_guest
  [ -f "$RUN/host-sysctl.orig" ] && sysctl -q -p "$RUN/host-sysctl.orig" >/dev/null   # the guest's sysctls hit the host kernel
  nft delete table ip "$NFT_TABLE" 2>/dev/null
  # the kernel drops the veth with the guest's network namespace, but asynchronously: do it now,
  # or the next `up` finds the name taken
  ip link delete "$VETH" 2>/dev/null
  for i in $(seq 50); do ip link show "$VETH" >/dev/null 2>&1 || break; sleep 0.1; done
  drop_cgroup "$NAME"
  if mountpoint -q "$R" && ! umount "$R"; then   # the loop device goes with the last umount
    swapoff_guest; umount "$R" || die "cannot unmount $R (busy: $(grep -c . /proc/swaps) swap lines; see /proc/swaps)"
  fi
  rmdir /run/systemd/nspawn/propagate/"$NAME" 2>/dev/null
  rm -rf "$RUN" "$LOCK.owner"
  say "down: $NAME removed"
}

reboot_guest() {  # a marker in the guest's /run (tmpfs) tells the rebooted guest from the old one
  local end t0=$SECONDS
  "${SSH[@]}" 'touch /run/serverfix-replica-before-reboot && systemctl reboot' 2>/dev/null
  end=$((SECONDS + 90))
  while [ $SECONDS -lt $end ]; do
    sleep 0.5
    "${SSH[@]}" 'systemctl is-system-running --wait >/dev/null 2>&1; test ! -e /run/serverfix-replica-before-reboot' \
      2>/dev/null && { say "reboot: back in $((SECONDS - t0)) s"; return 0; }
  done
  die "the replica did not come back within 90 s after reboot"
}

env_facts() {
  cat <<EOF
REPLICA_NAME=$NAME
REPLICA_IP=$IP
REPLICA_HOST_IP=$HOST_IP
REPLICA_KEY=$KEY
REPLICA_KNOWN_HOSTS=$RUN/known_hosts
REPLICA_RUN=$RUN
REPLICA_ROOTFS=$R
REPLICA_UP=$([ -f "$RUN/nspawn.pid" ] && echo 1 || echo 0)
EOF
}

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, systemd-nspawn, loop mounts, nftables)"
case ${1:-} in
  build) build ;;
  golden) golden ;;
  image) [ -f "$(GOLDEN)" ] && say "image: $(GOLDEN) (cached)" || golden ;;
  up) up ;;
  down) down ;;
  boot) boot ;;
  reboot) reboot_guest ;;
  ssh) shift; exec "${SSH[@]}" "$@" ;;
  env) env_facts ;;
  status) [ -f "$RUN/nspawn.pid" ] && { say "$NAME is up: root@$IP"; exit 0; }; say "$NAME is down"; exit 3 ;;
  clean) down; rm -f "$W"/base-*.tar.zst "$W"/golden-*.img ;;
  *) echo "usage: $0 build|golden|image|up|down|reboot|ssh CMD...|env|status|clean" >&2; exit 2 ;;
esac
