# shellcheck shell=bash
# scripts/replica.sh, part: what the replicas of this host share. There is one kernel: swap and the
# vm.* sysctls a guest sets are the host's, whichever replica set them. $HOST_DIR
# (REPLICA_HOST_DIR, default /run/serverfix-replica: gone with a reboot of the host, as the values
# are) keeps the host's sysctls as the FIRST replica found them (sysctl.orig) and one file per
# running replica (members/<name>: the boot loop's pid, its start time, the subnet). Both change
# only under a short flock ($HOST_DIR/lock). The sysctls go back to the recorded values only when
# no other member is up: at `down` of the last one, and in the boot loop after a guest's shutdown
# when it is alone. A member whose boot loop is gone (a killed run) is pruned, so it never keeps
# the others from restoring.

host_lock() {  # the short lock around members/ and sysctl.orig (fd 7; host_unlock releases it)
  mkdir -p "$HOST_DIR/members"
  exec 7>"$HOST_DIR/lock"
  flock -w 60 7 || die "$HOST_DIR/lock is held for more than 60 s (lsof $HOST_DIR/lock tells by whom)"
}
host_unlock() { exec 7>&-; }

proc_start() {  # $1: pid -> its start time (field 22 of /proc/<pid>/stat), nothing when it is gone
  [ -n "${1:-}" ] || return 0
  sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20 || true
}

member_alive() {  # $1: a members/ file; alive while its pid runs with the recorded start time
  local pid start _subnet
  read -r pid start _subnet < "$1" 2>/dev/null || return 1
  [ -n "$start" ] && [ "$(proc_start "$pid")" = "$start" ]
}

member_set() {  # $1: the pid that keeps this replica's membership alive (`up`, then the boot loop)
  echo "$1 $(proc_start "$1") $SUBNET" > "$HOST_DIR/members/$NAME"
}

other_members() {  # names in members/ other than this one (the live ones, after prune_members)
  local f
  for f in "$HOST_DIR"/members/*; do
    [ -f "$f" ] && [ "${f##*/}" != "$NAME" ] && echo "${f##*/}"
  done
  return 0
}

prune_members() {  # (under host_lock) drop members whose boot loop is gone
  local f
  for f in "$HOST_DIR"/members/*; do
    [ -f "$f" ] || continue
    member_alive "$f" && continue
    # (a `down` of it in progress removes its own file: say nothing then)
    [ -e "$W/run-${f##*/}/stop" ] || say "host: ${f##*/} is gone (pid $(cut -d' ' -f1 "$f")): no longer a member"
    rm -f "$f"
  done
  if [ -z "$(ls -A "$HOST_DIR/members")" ] && [ -f "$SYSCTL_ORIG" ]; then
    restore_host_sysctls; rm -f "$SYSCTL_ORIG"   # what the killed runs left set
  fi
}

subnet_owner() {  # the running replica other than this one that has $SUBNET (nothing: none)
  local m
  for m in $(other_members); do
    if [ "$(cut -d' ' -f3 "$HOST_DIR/members/$m")" = "$SUBNET" ] && member_alive "$HOST_DIR/members/$m"; then
      echo "$m"; return 0
    fi
  done
}

subnet_free() {  # (under host_lock) die when another running replica has $SUBNET
  local m
  m=$(subnet_owner)
  [ -z "$m" ] ||
    die "subnet $SUBNET (10.231.$SUBNET.2) is used by the running replica $m: give this one another REPLICA_SUBNET, or stop it first: REPLICA_NAME=$m $SELF down"
}

host_check_subnet() {  # `up`, before any work: refuse a subnet in use
  host_lock; prune_members; subnet_free; host_unlock
}

host_join() {  # `up`, the guest's rootfs mounted: record the host's sysctls if first, become a member
  host_lock
  prune_members
  subnet_free
  # the first member: the host's own values (and the keys the guest's sysctl.d sets, read in $R)
  if [ -z "$(other_members)" ]; then save_host_sysctls; fi
  member_set "$$"
  host_unlock
}

host_reset_if_alone() {  # the boot loop, between two boots of the guest
  # A VM's reboot resets its kernel's sysctls; here the kernel is the host's, shared by every
  # replica: while another one is up, its guest's values stay (the host cannot tell whose they are).
  host_lock
  prune_members
  if [ -z "$(other_members)" ]; then restore_host_sysctls; fi
  host_unlock
}

host_leave() {  # `down`: no longer a member; the last one restores the host's sysctls (and returns 0)
  local last=1
  host_lock
  rm -f "$HOST_DIR/members/$NAME"
  prune_members
  if [ -n "$(other_members)" ]; then
    last=0
  else
    restore_host_sysctls; rm -f "$SYSCTL_ORIG"
  fi
  host_unlock
  [ $last = 1 ]
}
