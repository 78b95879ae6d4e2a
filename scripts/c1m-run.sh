#!/usr/bin/env bash
# The C1M test on this box (`c1m run`): builds c1m when a source is newer than
# the build, optionally applies ./sysctl.conf (--sysctl, needs root), then runs
# `c1m run` with the other arguments from the repository root, so the report
# lands in ./reports/<timestamp>/ unless --out says otherwise.
#
#   scripts/c1m-run.sh [--sysctl] [c1m run options]
#   scripts/c1m-run.sh --sysctl --msg-rates 500,1000,2000,3000,4000   # 1M streams, 1M x 15 graph
#   scripts/c1m-run.sh --connections 20000 --users 20000 --hold 10 --msg-seconds 10
#
# `node dist/cli/c1m.js run --help` lists the options.
set -eu
cd "$(dirname "$0")/.."

sysctl=0
args=()
for a in "$@"; do
  if [[ $a == --sysctl ]]; then sysctl=1; else args+=("$a"); fi
done

if [[ ! -f dist/cli/c1m.js || ! -x dist/loadgen/flood-worker ]] ||
  [[ -n $(find . \( -path ./node_modules -o -path ./dist -o -path ./test \) -prune -o \( -name '*.ts' -o -name '*.c' \) -newer dist/cli/c1m.js -print -quit) ]]; then
  echo "building c1m" >&2
  npm run build --silent
fi

if [[ $sysctl -eq 1 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "--sysctl needs root: run it as root, or apply ./sysctl.conf yourself with sudo scripts/sysctl.sh" >&2
    exit 2
  fi
  # Keys a container does not let us set are reported, not fatal: the run says what it reached.
  scripts/sysctl.sh ./sysctl.conf >&2 || echo "some sysctl keys were not applied (above); running anyway" >&2
fi

exec node dist/cli/c1m.js run "${args[@]}"
