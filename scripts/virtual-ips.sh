#!/usr/bin/env bash
# Adds (up) or removes (down) COUNT consecutive addresses from BASE on a real
# network interface, so a load generator can open more than ~64,500
# connections to one server port: each source address has its own port range.
# Prints every command; --dry-run only prints them.
#
#   scripts/virtual-ips.sh up|down IFACE COUNT BASE[/PREFIX] [--dry-run]
#   scripts/virtual-ips.sh up eth0 17 10.0.0.1/24     # 10.0.0.1 .. 10.0.0.17
#
# Loopback needs none of this: every address in 127.0.0.0/8 is already local,
# so `c1m loadgen flood --src 127.0.1.1-127.0.1.40` works as is.
set -eu

usage() {
  echo "usage: $0 up|down IFACE COUNT BASE[/PREFIX] [--dry-run]" >&2
  exit 2
}

dry=0
args=()
for a in "$@"; do
  if [[ $a == --dry-run ]]; then dry=1; else args+=("$a"); fi
done
[[ ${#args[@]} -eq 4 ]] || usage
action=${args[0]} iface=${args[1]} count=${args[2]} base=${args[3]}
case $action in up) verb=add ;; down) verb=del ;; *) usage ;; esac
[[ $count =~ ^[1-9][0-9]*$ ]] || usage
prefix=32
if [[ $base == */* ]]; then
  prefix=${base#*/}
  base=${base%/*}
fi
[[ $prefix =~ ^[0-9]+$ && $prefix -le 32 ]] || usage
IFS=. read -r a b c d extra <<<"$base"
for octet in "$a" "$b" "$c" "$d"; do
  [[ $octet =~ ^[0-9]+$ && $octet -le 255 ]] || usage
done
[[ -z ${extra:-} ]] || usage
first=$(( (a << 24) | (b << 16) | (c << 8) | d ))
(( first + count - 1 <= 0xFFFFFFFF )) || usage

if [[ $iface == lo && $a == 127 ]]; then
  echo "# loopback: every address in 127.0.0.0/8 is already local, nothing to $action"
  exit 0
fi

for ((i = 0; i < count; i++)); do
  n=$((first + i))
  ip_addr="$(( (n >> 24) & 255 )).$(( (n >> 16) & 255 )).$(( (n >> 8) & 255 )).$(( n & 255 ))"
  cmd=(ip addr "$verb" "$ip_addr/$prefix" dev "$iface")
  echo "${cmd[*]}"
  [[ $dry -eq 1 ]] || "${cmd[@]}"
done
