# shellcheck shell=bash
# scripts/replica.sh, part: cgroups. This host may not run systemd: nspawn gets a cgroup of its own
# (serverfix-<name>) so that `down` can remove it and leave nothing behind.

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
