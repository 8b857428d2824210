# shellcheck shell=bash
# scripts/replica.sh, part: networking. The guest has its own network namespace: a veth pair
# ($VETH on the host, host0 in the guest, a /30), NAT out of the default route (an nftables table
# of its own) so apt/npm in the guest reach the registries.

veth_up() {  # the host side, once nspawn has made the veth
  local eg
  eg=$(ip route show default | awk '{ print $5; exit }')
  for _ in $(seq 100); do ip link show "$VETH" >/dev/null 2>&1 && break; sleep 0.05; done
  ip addr replace "$HOST_IP/30" dev "$VETH" && ip link set "$VETH" up
  if ! nft list table ip "$NFT_TABLE" >/dev/null 2>&1; then
    nft add table ip "$NFT_TABLE"
    nft add chain ip "$NFT_TABLE" post '{ type nat hook postrouting priority 100 ; }'
    nft add rule ip "$NFT_TABLE" post ip saddr "10.231.$SUBNET.0/30" oifname "$eg" masquerade
  fi
  sysctl -qw net.ipv4.ip_forward=1
}

guest_net_unit() {  # static guest address: systemd-networkd would wait forever for udev here (/sys is writable)
  printf '[Unit]\nBefore=network.target ssh.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\n'
  printf 'ExecStart=/sbin/ip link set host0 up\nExecStart=/sbin/ip addr replace %s/30 dev host0\n' "$IP"
  printf 'ExecStart=/sbin/ip route replace default via %s\n[Install]\nWantedBy=multi-user.target\n' "$HOST_IP"
}

net_down() {
  nft delete table ip "$NFT_TABLE" 2>/dev/null || true
  # the kernel drops the veth with the guest's network namespace, but asynchronously: do it now,
  # or the next `up` finds the name taken (unless another running replica has this subnet: its veth)
  [ -z "$(subnet_owner)" ] || return 0
  ip link delete "$VETH" 2>/dev/null || true
  for _ in $(seq 50); do ip link show "$VETH" >/dev/null 2>&1 || break; sleep 0.1; done
}
