#!/usr/bin/env bash
# Three simulated hosts on this machine, for the HAProxy cluster (docs/hosts.md):
#
#   root namespace: the balancer (HAProxy), on the bridge c1m-br at 10.201.0.1
#   c1m-brain  10.201.0.10  nats-server, the router and its SQLite store
#   c1m-edge1  10.201.0.11  edges
#   c1m-edge2  10.201.0.12  edges
#
# Each host is a network namespace with one veth "cable" plugged into the bridge.
# 10.201.0.0/24 exists only on that bridge and inside the namespaces: the
# namespaces get no default route, nothing is NATed and IP forwarding stays as
# it is (off), so no packet of theirs can leave this machine.
#
#   scripts/hosts.sh up             create everything (again: changes nothing)
#   scripts/hosts.sh down           remove everything, ending processes left in the namespaces
#   scripts/hosts.sh unplug HOST    pull HOST's cable (its veth goes down): the host is off the network
#   scripts/hosts.sh plug HOST      put it back
#   scripts/hosts.sh addr HOST      print HOST's address (balancer, brain, edge1, edge2)
#
# Every command that changes something is printed first, prefixed with '+'.
#
# The bus between these hosts crosses the bridge, so it runs authenticated and over TLS (docs/hosts.md,
# "NATS across hosts"): `c1m nats-config --dir DIR --listen 10.201.0.10:4222 --edges ... --tls-self-signed 10.201.0.10`
# on the brain host, `nats-server -c DIR/nats.conf`, and each process given its own DIR/*.creds and DIR/ca.pem.
# An edge or router pointed at 10.201.0.10 without credentials refuses to start.
set -euo pipefail

SUBNET=10.201.0
BRIDGE=c1m-br
BALANCER_ADDR=$SUBNET.1
HOSTS=(brain edge1 edge2)
declare -A ADDR=([balancer]=$BALANCER_ADDR [brain]=$SUBNET.10 [edge1]=$SUBNET.11 [edge2]=$SUBNET.12)

run() {
  echo "+ $*" >&2
  "$@"
}

has_netns() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
has_link() { ip link show dev "$1" >/dev/null 2>&1; }
# The root-side end of a host's cable; the namespace side is called eth0.
cable() { echo "c1m-$1"; }

known_host() {
  [[ -n "${ADDR[$1]:-}" && "$1" != balancer ]] || { echo "unknown host '$1' (brain, edge1, edge2)" >&2; exit 2; }
}

up() {
  # Refuse to shadow a network that is really in use on this machine.
  if ip route show "$SUBNET.0/24" | grep -qv "dev $BRIDGE"; then
    echo "$SUBNET.0/24 is already routed elsewhere on this machine: $(ip route show "$SUBNET.0/24")" >&2
    exit 1
  fi
  if ! has_link "$BRIDGE"; then
    # STP off: three ports, no loops, and ports forward at once instead of after 15 s of listening.
    run ip link add "$BRIDGE" type bridge stp_state 0
  fi
  run ip addr replace "$BALANCER_ADDR/24" dev "$BRIDGE"
  run ip link set "$BRIDGE" up
  for host in "${HOSTS[@]}"; do
    local ns=c1m-$host
    has_netns "$ns" || run ip netns add "$ns"
    run ip -n "$ns" link set lo up
    if ! has_link "$(cable "$host")"; then
      run ip link add "$(cable "$host")" type veth peer name eth0 netns "$ns"
    fi
    run ip link set "$(cable "$host")" master "$BRIDGE" up
    run ip -n "$ns" addr replace "${ADDR[$host]}/24" dev eth0
    run ip -n "$ns" link set eth0 up
  done
  # Wait until every cable carries traffic (port forwarding, both ends up), so callers can start at once.
  for host in "${HOSTS[@]}"; do
    for _ in $(seq 50); do
      [[ "$(cat "/sys/class/net/$(cable "$host")/brport/state")" == 3 &&
        "$(ip netns exec "c1m-$host" cat /sys/class/net/eth0/operstate)" == up ]] && break
      sleep 0.1
    done
  done
}

down() {
  for host in "${HOSTS[@]}"; do
    local ns=c1m-$host
    has_netns "$ns" || continue
    # A process still inside would keep the namespace alive after its name is gone; only
    # programs started for these hosts run there.
    for pid in $(ip netns pids "$ns"); do
      echo "ending $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)) in $ns" >&2
      run kill -TERM "$pid" || true
    done
    # Deleting the namespace deletes its end of the cable, and with it the root-side end.
    run ip netns delete "$ns"
  done
  # The kernel removes a deleted namespace's devices a moment later: a cable may vanish under us.
  for host in "${HOSTS[@]}"; do
    if has_link "$(cable "$host")"; then run ip link delete "$(cable "$host")" 2>/dev/null || ! has_link "$(cable "$host")"; fi
  done
  if has_link "$BRIDGE"; then run ip link delete "$BRIDGE"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  unplug) known_host "${2:-}"; run ip link set "$(cable "$2")" down ;;
  plug) known_host "${2:-}"; run ip link set "$(cable "$2")" up ;;
  addr) [[ -n "${ADDR[${2:-}]:-}" ]] || { echo "unknown host '${2:-}'" >&2; exit 2; }; echo "${ADDR[$2]}" ;;
  *) echo "usage: $0 up|down|unplug HOST|plug HOST|addr HOST" >&2; exit 2 ;;
esac
