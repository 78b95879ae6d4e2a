#!/usr/bin/env bash
# Applies a sysctl.conf (default: ./sysctl.conf) key by key, writing
# /proc/sys directly, and reports every key that could not be set and why
# (unknown key, permission, read-only in a container, or a value the kernel
# did not keep). Exit status: 0 if every key applied, 1 if any did not,
# 2 on a bad invocation.
#
#   scripts/sysctl.sh [FILE]
set -u

file=${1:-./sysctl.conf}
if [[ $# -gt 1 || ! -r $file ]]; then
  echo "usage: $0 [FILE]   (default ./sysctl.conf; '$file' is not readable)" >&2
  exit 2
fi

applied=0
failed=0
lineno=0
fail() {
  echo "FAIL $1: $2"
  failed=$((failed + 1))
}

while IFS= read -r raw || [[ -n $raw ]]; do
  lineno=$((lineno + 1))
  line=${raw%%#*}
  line=${line%%;*}
  [[ $line =~ ^[[:space:]]*$ ]] && continue
  if [[ ! $line =~ ^[[:space:]]*([A-Za-z0-9_.-]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]]; then
    fail "$file:$lineno" "not 'key = value': $raw"
    continue
  fi
  key=${BASH_REMATCH[1]}
  value=${BASH_REMATCH[2]}
  path=/proc/sys/${key//.//}
  if [[ ! -e $path ]]; then
    fail "$key" "unknown key on this kernel (no $path)"
    continue
  fi
  # The shell's own message ("Permission denied", "Read-only file system", "Invalid argument"), without its prefix.
  if ! err=$( { printf '%s\n' "$value" >"$path"; } 2>&1); then
    fail "$key" "cannot write $value: ${err##*: }"
    continue
  fi
  # Multi-value keys read back tab-separated; compare field by field.
  now=$(tr -s '[:space:]' ' ' <"$path" | sed 's/ $//')
  want=$(tr -s '[:space:]' ' ' <<<"$value" | sed 's/ $//')
  if [[ $now != "$want" ]]; then
    fail "$key" "wrote $want, the kernel kept $now"
    continue
  fi
  echo "ok   $key = $value"
  applied=$((applied + 1))
done <"$file"

echo "$applied applied, $failed failed ($file)"
[[ $failed -eq 0 ]]
