# shellcheck shell=bash
# scripts/replica.sh, part: host-global state the guest can change. Swap and vm.* sysctls are
# kernel-wide: whatever the formula does in the guest hits the host kernel, so `up` records the
# host's values and `down` (and the boot loop, after each guest shutdown) undoes the guest's.

guest_sysctl_keys() {  # keys the guest's own sysctl.d files set at boot (net.* stay in its namespace)
  cat "$R"/usr/lib/sysctl.d/*.conf "$R"/etc/sysctl.d/*.conf "$R"/etc/sysctl.conf 2>/dev/null |
    sed -E 's/[#;].*//; s/^-//; s/=.*//; s/[[:space:]]//g' | grep -v -e '^$' -e '^net\.' -e '\*' | sort -u || true
}

save_host_sysctls() {  # -> $RUN/host-sysctl.orig, in `sysctl -p` form
  local k
  for k in $SYSCTL_KEYS $(guest_sysctl_keys); do
    if [ -w "/proc/sys/${k//.//}" ]; then echo "$k=$(sysctl -n "$k")"; fi
  done > "$RUN/host-sysctl.orig"
}

restore_host_sysctls() {
  if [ -f "$RUN/host-sysctl.orig" ]; then sysctl -q -p "$RUN/host-sysctl.orig" >/dev/null || true; fi
}

swapoff_guest() {
  # Swap outlives the container. /proc/swaps names the guest's file as the guest sees it (/swapfile):
  # its mount is not in the host's tree. The same inode is reachable here under $R, and swapoff
  # matches the file, not the name.
  local f
  awk 'NR > 1 && $2 == "file" { print $1 }' /proc/swaps | while read -r f; do
    if [ -f "$R$f" ] && swapoff "$R$f" 2>/dev/null; then say "swapoff $f (guest)"; fi
  done
}
