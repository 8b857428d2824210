# shellcheck shell=bash
# scripts/replica.sh, part: the server's RAM in the guest's /proc. lxcfs (a FUSE file system, Debian
# package lxcfs) serves /proc/meminfo, cpuinfo, stat and uptime as seen from the reader's cgroups, so
# the guest's /proc/meminfo shows the memory limit of the boot loop's cgroup (cgroup.sh), not the
# build machine's RAM. `up` starts an lxcfs of its own on $RUN/lxcfs (never a system-wide one),
# `down` stops it by its PID and unmounts it.
#
# nspawn mounts binds below /proc in the container's own mount namespace, with the source path
# resolved inside the container: the mount point goes to the guest's /var/lib/lxcfs first, then
# each file from there over /proc. /proc/swaps stays the kernel's: lxcfs would show one "none virtual"
# line instead of /swapfile, and Salt and the formula read /proc/swaps to see the swap file (as they
# do on the VM, where /proc/swaps is the kernel's too).

LXCFS_DIR=$RUN/lxcfs
LXCFS_FILES="meminfo cpuinfo stat uptime"

lxcfs_binds() {  # nspawn arguments (none with REPLICA_MEMORY=off)
  local f
  [ "$MEMORY" = off ] && return 0
  echo "--bind-ro=$LXCFS_DIR:/var/lib/lxcfs"
  for f in $LXCFS_FILES; do echo "--bind-ro=/var/lib/lxcfs/proc/$f:/proc/$f"; done
}

lxcfs_up() {
  local p
  [ "$MEMORY" = off ] && return 0
  command -v lxcfs >/dev/null || die "lxcfs not found: apt-get install lxcfs (scripts/lib/setup.sh does), or REPLICA_MEMORY=off"
  # lxcfs makes /run/lxcfs for its own mount namespace; the last `down` removes it only if a
  # replica made it (the other replicas' lxcfs use it: an rmdir here would unmount theirs)
  if [ ! -e /run/lxcfs ]; then mkdir -p "$HOST_DIR" && touch "$HOST_DIR/lxcfs.made-run-dir"; fi
  mkdir -p "$LXCFS_DIR"
  setsid lxcfs -f -p "$RUN/lxcfs.pid" "$LXCFS_DIR" </dev/null >"$RUN/lxcfs.log" 2>&1 &
  p=$!
  echo "$p" > "$RUN/lxcfs.launched"
  for _ in $(seq 100); do
    [ -e "$LXCFS_DIR/proc/meminfo" ] && return 0
    kill -0 "$p" 2>/dev/null || break
    sleep 0.05
  done
  tail -5 "$RUN/lxcfs.log" >&2
  die "lxcfs did not mount $LXCFS_DIR (log $RUN/lxcfs.log)"
}

lxcfs_down() {  # $1: 1 when this is the last replica of the host (host_leave)
  local p
  if p=$(cat "$RUN/lxcfs.launched" 2>/dev/null) && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = lxcfs ]; then
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  # /proc/mounts, not mountpoint(1): a dead FUSE mount fails stat()
  if awk -v d="$LXCFS_DIR" '$2 == d { found = 1 } END { exit !found }' /proc/mounts; then umount "$LXCFS_DIR" 2>/dev/null || umount -l "$LXCFS_DIR" || true; fi
  if [ "${1:-0}" = 1 ] && [ -f "$HOST_DIR/lxcfs.made-run-dir" ]; then
    rmdir /run/lxcfs/controllers /run/lxcfs/root /run/lxcfs 2>/dev/null || true
    rm -f "$HOST_DIR/lxcfs.made-run-dir"
  fi
}
