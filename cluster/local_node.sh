#!/usr/bin/env bash
# Join this machine to a local Ray head (cluster/local_head.sh) as one more
# node on 127.0.0.1, in the foreground: a multi-node cluster on one machine,
# for trying what a job does with several nodes (its cells' statistics become
# Ray tasks spread over them).
# Usage: cluster/local_node.sh GCS_PORT [NUM_CPUS]
# Stop it with Ctrl-C or by killing this process's PID (never `ray stop`).
# The token is RAY_AUTH_TOKEN if set, else the one local_head.sh wrote to
# ~/.ray/auth_token.
set -euo pipefail
gcs="${1:?usage: cluster/local_node.sh GCS_PORT [NUM_CPUS]}"
cpus="${2:-$(nproc)}"
export RAY_AUTH_MODE=token
if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  RAY_AUTH_TOKEN="$(cat ~/.ray/auth_token)"
  export RAY_AUTH_TOKEN
fi
exec ray start --address "127.0.0.1:$gcs" --block --node-ip-address 127.0.0.1 \
  --num-cpus "$cpus" --disable-usage-stats
