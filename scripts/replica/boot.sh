# shellcheck shell=bash
# scripts/replica.sh, part: the running replica. `up` copies the golden image, joins the host's
# members (host.sh: the first one records the host's sysctls), pins the guest's host keys and starts
# the boot loop detached; `down` undoes all of it; `reboot` reboots the guest and waits until it is
# back. lxcfs (lxcfs.sh) runs from `up` to `down`; the memory limit (cgroup.sh) is on the boot loop,
# so each boot of the guest has it. The lock is per name: replicas of other names run side by side.

boot() {  # the boot loop (detached, holds the lock): nspawn exits 133 when the guest reboots -> start it again
  local rc binds
  own_cgroup "$NAME"
  limit_memory "$NAME"   # the server's RAM, for the guest and what it starts
  mapfile -t binds < <(lxcfs_binds)
  echo $$ > "$RUN/boot.pid"
  host_lock; member_set "$$"; host_unlock   # the membership lives as long as this loop
  while :; do
    "${NSPAWN[@]}" --boot -D "$R" -M "$NAME" --console=passive --system-call-filter=@swap \
      --network-veth-extra="$VETH:host0" "${binds[@]}" >>"$RUN/nspawn.log" 2>&1 </dev/null &
    echo $! > "$RUN/nspawn.pid"
    veth_up
    rc=0; wait $! || rc=$?
    # what a VM's reboot resets: its swap is off and its kernel's sysctls are back to the defaults
    # (only while no other replica is up: they share this one kernel, host.sh)
    { echo "nspawn exit $rc"; swapoff_guest; host_reset_if_alone; } >>"$RUN/nspawn.log" 2>&1
    if [ "$rc" != 133 ] || [ -e "$RUN/stop" ]; then break; fi
  done
  rm -f "$RUN/nspawn.pid"
}

up() {
  local golden end t0=$SECONDS k
  golden=$(GOLDEN)
  memory_bytes >/dev/null   # a bad REPLICA_MEMORY stops here, not in the detached boot loop
  [[ ${REPLICA_SUBNET:-7} =~ ^[1-9][0-9]?$|^1[0-9][0-9]$|^2[0-4][0-9]$|^25[0-4]$ ]] ||
    die "REPLICA_SUBNET=${REPLICA_SUBNET:-} is not a subnet number: give 1-254 (the guest is 10.231.<n>.2)"
  mkdir -p "$W" "$(dirname "$LOCK")"
  if [ ! -f "$golden" ]; then   # one build at a time: `up`s of other names may run at once
    exec 8>"$W/image.lock"
    flock -w 900 8 || die "another process builds the image for more than 15 min ($W/image.lock)"
    if [ ! -f "$golden" ]; then golden; fi
    exec 8>&-
  fi
  exec 9>"$LOCK"   # held by the boot loop (and lxcfs) as long as this replica runs
  if ! flock -n 9; then
    # `up` of a replica that is up starts it fresh (as always); one whose `up` still runs is busy
    if [ -f "$RUN/nspawn.pid" ] && [ -z "$(proc_start "$(cat "$RUN/up.pid" 2>/dev/null)")" ]; then down; fi
    flock -w "$LOCK_WAIT" 9 ||
      die "replica $NAME is being started or stopped by another process ($(cat "$LOCK.owner" 2>/dev/null)); wait for it (REPLICA_LOCK_WAIT=<seconds>) or stop it: REPLICA_NAME=$NAME $SELF down"
  fi
  down   # what a killed run of this name left
  set_subnet "${REPLICA_SUBNET:-7}"
  host_check_subnet   # refuses a subnet another running replica has
  echo "$NAME (subnet $SUBNET, up pid $$)" > "$LOCK.owner"
  mkdir -p "$R"
  echo $$ > "$RUN/up.pid"
  echo "$SUBNET" > "$RUN/subnet"   # for `env`, `ssh` and `down` run later without REPLICA_SUBNET
  { cp --sparse=always "$golden" "$RUN/root.img" && mount -o loop "$RUN/root.img" "$R"; } || die "mounting $RUN/root.img failed"
  host_join   # after the mount: the first member records the keys the guest's sysctl.d sets too
  echo "$NAME" > "$R/etc/hostname"   # each replica its own (the golden image has its builder's name)
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost ip6-loopback\n' "$NAME" > "$R/etc/hosts"
  echo "$MEMORY" > "$RUN/memory"   # for `env` and `down` run later, maybe without REPLICA_MEMORY
  guest_net_unit > "$R/etc/systemd/system/replica-net.service"
  guest_swap_unit > "$R/etc/systemd/system/replica-swap.service"
  chroot "$R" systemctl enable -q replica-net.service replica-swap.service
  lxcfs_up
  # pin the guest's host keys (no trust-on-first-use)
  for k in "$R"/etc/ssh/ssh_host_*_key.pub; do echo "$IP $(cut -d' ' -f1,2 "$k")"; done > "$RUN/known_hosts"
  ip link delete "$VETH" 2>/dev/null || true   # a leftover of a killed run would make nspawn fail
  setsid bash "$SELF" boot </dev/null >/dev/null 2>>"$RUN/nspawn.log" &   # holds the lock (fd 9) while the guest runs
  exec 9>&-
  end=$((SECONDS + 90))
  while [ $SECONDS -lt $end ]; do
    if "${SSH[@]}" 'systemctl is-system-running --wait >/dev/null 2>&1; true' 2>/dev/null; then
      rm -f "$RUN/up.pid"
      say "up: $NAME root@$IP (key $KEY) in $((SECONDS - t0)) s"
      return 0
    fi
    sleep 0.3
  done
  tail -30 "$RUN/nspawn.log" >&2
  die "the replica did not answer on ssh within 90 s"
}

down() {
  local p b last=0
  [ -d "$RUN" ] || return 0
  touch "$RUN/stop"
  if [ -f "$RUN/nspawn.pid" ]; then
    p=$(cat "$RUN/nspawn.pid")
    kill -TERM "$p" 2>/dev/null || true    # nspawn turns SIGTERM into a clean guest halt
    for _ in $(seq 150); do
      if [ ! -f "$RUN/nspawn.pid" ] || ! kill -0 "$p" 2>/dev/null; then break; fi
      sleep 0.2
    done
    if [ -f "$RUN/nspawn.pid" ] && kill -KILL "$p" 2>/dev/null; then sleep 1; fi
  fi
  if b=$(cat "$RUN/boot.pid" 2>/dev/null); then
    for _ in $(seq 50); do kill -0 "$b" 2>/dev/null || break; sleep 0.1; done
  fi
  swapoff_guest   # its own swap files only (under $R): another replica's stay on
  # a run the one-at-a-time replica.sh started kept the host's sysctls in its run dir
  if [ ! -f "$SYSCTL_ORIG" ] && [ -f "$RUN/host-sysctl.orig" ]; then mkdir -p "$HOST_DIR"; cp "$RUN/host-sysctl.orig" "$SYSCTL_ORIG"; fi
  if host_leave; then last=1; fi   # the last member restores the host's sysctls (the guests' hit the host kernel)
  net_down
  drop_cgroup "$NAME"
  drop_memory_cgroup
  lxcfs_down "$last"
  if mountpoint -q "$R" && ! umount "$R"; then   # the loop device goes with the last umount
    swapoff_guest; umount "$R" || die "cannot unmount $R (busy: $(grep -c . /proc/swaps) swap lines; see /proc/swaps)"
  fi
  rmdir /run/systemd/nspawn/propagate/"$NAME" 2>/dev/null || true
  rm -rf "$RUN" "$LOCK.owner"
  say "down: $NAME removed"
}

reboot_guest() {  # a marker in the guest's /run (tmpfs) tells the rebooted guest from the old one
  local end t0=$SECONDS
  "${SSH[@]}" 'touch /run/serverfix-replica-before-reboot && systemctl reboot' 2>/dev/null || true
  end=$((SECONDS + 90))
  while [ $SECONDS -lt $end ]; do
    sleep 0.5
    if "${SSH[@]}" 'systemctl is-system-running --wait >/dev/null 2>&1; test ! -e /run/serverfix-replica-before-reboot' \
      2>/dev/null; then say "reboot: back in $((SECONDS - t0)) s"; return 0; fi
  done
  die "the replica did not come back within 90 s after reboot"
}

env_facts() {
  local size
  size=$(cat "$RUN/memory" 2>/dev/null || echo "$MEMORY")   # what the running replica has
  cat <<EOT
REPLICA_NAME=$NAME
REPLICA_IP=$IP
REPLICA_HOST_IP=$HOST_IP
REPLICA_KEY=$KEY
REPLICA_KNOWN_HOSTS=$RUN/known_hosts
REPLICA_RUN=$RUN
REPLICA_ROOTFS=$R
REPLICA_UP=$([ -f "$RUN/nspawn.pid" ] && echo 1 || echo 0)
REPLICA_MEMORY=$size
REPLICA_MEMORY_CGROUP=$(cat "$RUN/memory-cgroup" 2>/dev/null || true)
REPLICA_LXCFS=$([ "$size" = off ] || echo "$LXCFS_DIR")
EOT
}
