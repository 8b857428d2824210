# shellcheck shell=bash
# scripts/replica.sh, part: cgroups. This host may not run systemd: nspawn gets a cgroup of its own
# (serverfix-<name>) so that `down` can remove it and leave nothing behind. The boot loop also gets a
# memory cgroup with the server's RAM as its limit (REPLICA_MEMORY): lxcfs (lxcfs.sh) turns that
# limit into the guest's /proc/meminfo.

own_cgroup() {  # $1: the cgroup's name; moves this (sub)shell into it
  local h
  for h in systemd unified; do
    [ -d "/sys/fs/cgroup/$h" ] || continue
    if mkdir -p "/sys/fs/cgroup/$h/serverfix-$1"; then
      echo "$BASHPID" > "/sys/fs/cgroup/$h/serverfix-$1/cgroup.procs" || true
    fi
  done
}

drop_cgroup() {  # $1: the cgroup's name; removes it and what nspawn made below it
  local h d
  for h in systemd unified; do
    d=/sys/fs/cgroup/$h/serverfix-$1
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
}

memory_bytes() {  # REPLICA_MEMORY (4G, 512M, 4294967296) -> bytes; "off" -> nothing
  [ "$MEMORY" = off ] && return 0
  [[ $MEMORY =~ ^[1-9][0-9]*[KMGT]?$ ]] ||
    die "REPLICA_MEMORY=$MEMORY is not a size: give e.g. 4G (the runbook's server), 8G, or off (this host's RAM)"
  numfmt --from=iec "$MEMORY"
}

limit_memory() {  # $1: the cgroup's name; moves this (sub)shell into a memory cgroup limited to REPLICA_MEMORY
  # A child of the memory cgroup we run in (cgroup v1 memory hierarchy, or v2 where the memory
  # controller is on for the unified cgroup of own_cgroup); its path goes to $RUN/memory-cgroup for `down`.
  local bytes d
  bytes=$(memory_bytes)
  [ -n "$bytes" ] || return 0
  if [ -f /sys/fs/cgroup/memory/cgroup.procs ]; then
    d=/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" { print $3; exit }' /proc/self/cgroup)
    d=${d%/}/serverfix-$1
    { mkdir -p "$d" && echo "$bytes" > "$d/memory.limit_in_bytes"; } || die "cannot limit $d to $MEMORY"
  elif grep -qw memory "/sys/fs/cgroup/unified/serverfix-$1/cgroup.controllers" 2>/dev/null; then
    d=/sys/fs/cgroup/unified/serverfix-$1
    echo "$bytes" > "$d/memory.max" || die "cannot limit $d to $MEMORY"
  else
    die "no memory cgroup controller to limit the replica to $MEMORY (REPLICA_MEMORY=off runs it without)"
  fi
  echo "$d" > "$RUN/memory-cgroup"
  echo "$BASHPID" > "$d/cgroup.procs"
}

drop_memory_cgroup() {  # what limit_memory made (empty by now: the guest and the boot loop are gone)
  local d
  d=$(cat "$RUN/memory-cgroup" 2>/dev/null) || return 0
  case $d in */serverfix-"$NAME") ;; *) return 0 ;; esac   # only ours
  if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
}
