# shellcheck shell=bash
# scripts/replica.sh, part: host-global state the guest can change. Swap and vm.* sysctls are
# kernel-wide: whatever the formula does in the guest hits the host kernel, so the first `up`
# records the host's values and the last `down` (and the boot loop, after each guest shutdown while
# no other replica is up: host.sh) undoes the guests'. After
# a reboot the guest starts from the host's values as a VM starts from the kernel's defaults: what
# it has then came from its own boot (systemd-sysctl reading /etc/sysctl.d, swap from /etc/fstab).

guest_sysctl_keys() {  # keys the guest's own sysctl.d files set at boot (net.* stay in its namespace)
  cat "$R"/usr/lib/sysctl.d/*.conf "$R"/etc/sysctl.d/*.conf "$R"/etc/sysctl.conf 2>/dev/null |
    sed -E 's/[#;].*//; s/^-//; s/=.*//; s/[[:space:]]//g' | grep -v -e '^$' -e '^net\.' -e '\*' | sort -u || true
}

save_host_sysctls() {  # -> $SYSCTL_ORIG (host.sh), in `sysctl -p` form
  # every vm.* key (the guest or the formula may set any of them later, e.g. vm.overcommit_memory),
  # the listed ones and what the guest's sysctl.d sets at boot
  local k
  for k in $SYSCTL_KEYS $(guest_sysctl_keys) $(sysctl -aN 2>/dev/null | grep '^vm\.' || true); do
    if [ -r "/proc/sys/${k//.//}" ] && [ -w "/proc/sys/${k//.//}" ]; then echo "$k=$(sysctl -n "$k")"; fi
  done | sort -u > "$SYSCTL_ORIG"
}

restore_host_sysctls() {  # only the keys whose value changed (vm.drop_caches and the like act on a write)
  local k v line
  [ -f "$SYSCTL_ORIG" ] || return 0
  while IFS= read -r line; do
    k=${line%%=*} v=${line#*=}
    if [ "$(sysctl -n "$k" 2>/dev/null)" != "$v" ]; then sysctl -q -w "$k=$v" >/dev/null 2>&1 || true; fi
  done < "$SYSCTL_ORIG"
}

swapoff_guest() {
  # Swap outlives the container. /proc/swaps names the guest's file as the guest sees it (/swapfile):
  # its mount is not in the host's tree. The same inode is reachable here under $R, and swapoff
  # matches the file, not the name: another replica's /swapfile (the same name) is not under $R.
  local f
  awk 'NR > 1 && $2 == "file" { print $1 }' /proc/swaps | while read -r f; do
    if [ -f "$R$f" ] && swapoff "$R$f" 2>/dev/null; then say "swapoff $f (guest)"; fi
  done
}

guest_swap_unit() {  # swap from the guest's /etc/fstab at boot, as the VM's systemd does
  # On the VM, systemd-fstab-generator turns each fstab swap line into a .swap unit (swapfile.swap)
  # wanted by swap.target. In a container the generator skips swap lines ("Running in a container,
  # ignoring fstab swap entry") and systemd refuses .swap units: this oneshot takes their place, at the
  # same point of the boot (after local-fs.target, before swap.target). swapon --all skips what is active.
  printf '[Unit]\nDescription=Swap from /etc/fstab (replica: the fstab generator skips swap in containers)\n'
  printf 'DefaultDependencies=no\nAfter=local-fs.target\nBefore=swap.target\nConditionPathExists=/etc/fstab\n'
  printf '[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/sbin/swapon --all --verbose\n'
  printf '[Install]\nWantedBy=swap.target\n'
}
