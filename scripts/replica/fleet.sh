# shellcheck shell=bash
# scripts/replica.sh, part: a fleet, N replicas side by side. `fleet up N` boots $FLEET-1 ...
# $FLEET-N (REPLICA_FLEET, default hetzner) in parallel, member i on subnet
# REPLICA_FLEET_SUBNET_BASE + i (default 20 + i: 10.231.21.2, 10.231.22.2, ...), and puts one host
# address for a salt-master on a dummy interface (REPLICA_FLEET_MASTER_IP on REPLICA_FLEET_MASTER_IF,
# default 10.231.0.1/32 on sfmaster0; a bridge without ports where the kernel lacks the dummy
# driver): every guest reaches it through its default route (the host end of its veth), as the
# servers reach their master. It is a local address of the host: no forwarding, no NAT. Each member is an ordinary replica (its own
# run dir, lock, cgroups, lxcfs, veth and NAT table; `REPLICA_NAME=hetzner-2 replica.sh ssh ...`);
# `down` of one leaves the others, the interface and the host's sysctls as they are, `fleet down`
# stops them all and removes the interface.

FLEET_NAMES_FILE=$HOST_DIR/fleet-$FLEET.names   # the members `fleet up` booted, one a line

fleet_member() {  # $1: the member's name, then the replica.sh command: that replica, not this one's
  local name=$1; shift
  env -u REPLICA_LOCK -u REPLICA_SUBNET REPLICA_NAME="$name" "$@"
}

fleet_names() {  # the members: what `fleet up` recorded, and any $FLEET-<n> with a run dir
  local d
  {
    cat "$FLEET_NAMES_FILE" 2>/dev/null || true
    for d in "$W"/run-"$FLEET"-*; do
      [ -e "$d" ] || continue
      d=${d#"$W"/run-}
      [[ $d =~ ^$FLEET-[0-9]+$ ]] && echo "$d"
    done
  } | sort -V -u
}

master_if_up() {  # a dummy interface; a bridge without ports where the kernel has no dummy driver
  if ! ip link show "$FLEET_MASTER_IF" >/dev/null 2>&1; then
    ip link add "$FLEET_MASTER_IF" type dummy 2>/dev/null || ip link add "$FLEET_MASTER_IF" type bridge ||
      die "cannot add the interface $FLEET_MASTER_IF (neither type dummy nor bridge)"
  fi
  { ip addr replace "$FLEET_MASTER_IP/32" dev "$FLEET_MASTER_IF" && ip link set "$FLEET_MASTER_IF" up; } ||
    die "cannot put $FLEET_MASTER_IP on $FLEET_MASTER_IF"
}

fleet_up() {  # $1: N
  local n=${1:-} i name t0=$SECONDS failed="" pids=() names=()
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "fleet up N: N is the number of replicas (1-99), not '${n}'"
  { [[ $FLEET_SUBNET_BASE =~ ^[0-9]+$ ]] && [ $((FLEET_SUBNET_BASE + n)) -le 254 ]; } ||
    die "REPLICA_FLEET_SUBNET_BASE=$FLEET_SUBNET_BASE + $n is past subnet 254"
  if [ ! -f "$(GOLDEN)" ]; then REPLICA_NAME=$FLEET-1 bash "$SELF" image; fi   # once, before the parallel `up`s
  for name in $(fleet_names); do   # a bigger fleet before: the members past N go
    if [ "${name##*-}" -gt "$n" ]; then fleet_member "$name" bash "$SELF" down; fi
  done
  master_if_up
  for i in $(seq "$n"); do names+=("$FLEET-$i"); done
  mkdir -p "$HOST_DIR"
  printf '%s\n' "${names[@]}" > "$FLEET_NAMES_FILE"
  for i in $(seq "$n"); do
    fleet_member "$FLEET-$i" env REPLICA_SUBNET=$((FLEET_SUBNET_BASE + i)) bash "$SELF" up &
    pids+=($!)
  done
  for i in $(seq "$n"); do
    wait "${pids[i - 1]}" || failed="$failed $FLEET-$i"
  done
  [ -z "$failed" ] || die "fleet up: failed:$failed (the others are up; REPLICA_FLEET=$FLEET $SELF fleet down stops them all)"
  say "fleet up: ${names[*]} and the master address $FLEET_MASTER_IP ($FLEET_MASTER_IF) in $((SECONDS - t0)) s"
}

fleet_down() {
  local name pids=() rc=0 p
  for name in $(fleet_names); do
    fleet_member "$name" bash "$SELF" down &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  ip link delete "$FLEET_MASTER_IF" 2>/dev/null || true
  rm -f "$FLEET_NAMES_FILE"
  [ $rc = 0 ] || die "fleet down: a member did not go down (see above)"
  say "fleet down: $FLEET removed"
}

fleet_env() {
  local names ips="" name
  names=$(fleet_names | xargs)
  for name in $names; do
    ips="$ips 10.231.$(cat "$W/run-$name/subnet" 2>/dev/null || echo '?').2"
  done
  cat <<EOT
REPLICA_FLEET=$FLEET
REPLICA_FLEET_MASTER_IP=$FLEET_MASTER_IP
REPLICA_FLEET_MASTER_IF=$FLEET_MASTER_IF
REPLICA_FLEET_NAMES="$names"
REPLICA_FLEET_IPS="${ips# }"
EOT
}

fleet_status() {  # 0: every member up (and the master address); 3: not
  local name rc=0 names
  names=$(fleet_names)
  [ -n "$names" ] || { say "fleet $FLEET is down"; return 3; }
  for name in $names; do fleet_member "$name" bash "$SELF" status || rc=3; done
  if ip -4 addr show dev "$FLEET_MASTER_IF" 2>/dev/null | grep -q " $FLEET_MASTER_IP/"; then
    say "master address $FLEET_MASTER_IP on $FLEET_MASTER_IF"
  else
    say "master address $FLEET_MASTER_IP: not on $FLEET_MASTER_IF"; rc=3
  fi
  return $rc
}

fleet() {  # fleet up N | down | env | status
  case ${1:-} in
    up) fleet_up "${2:-}" ;;
    down) fleet_down ;;
    env) fleet_env ;;
    status) fleet_status ;;
    *) echo "usage: $SELF fleet up N|down|env|status" >&2; exit 2 ;;
  esac
}
