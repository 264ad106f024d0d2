#!/usr/bin/env bash
# Start a local Ray head on 127.0.0.1 with token auth, in the foreground.
# Usage: cluster/local_head.sh [DASHBOARD_PORT] [GCS_PORT] [NUM_CPUS]
# Stop it with Ctrl-C or by killing this process's PID (never `ray stop`: that
# kills every Ray process on the machine by name).
# The token is RAY_AUTH_TOKEN if set, else a fresh one written to
# ~/.ray/auth_token (where Ray's clients look for it).
set -euo pipefail
dash="${1:-8265}"
gcs="${2:-6379}"
cpus="${3:-$(nproc)}"
export RAY_AUTH_MODE=token
if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  export RAY_AUTH_TOKEN="$(python -c 'import secrets; print(secrets.token_hex(32))')"
  mkdir -p ~/.ray && umask 077 && printf '%s' "$RAY_AUTH_TOKEN" > ~/.ray/auth_token
  echo "token written to ~/.ray/auth_token"
fi
echo "submit with: lensaudit submit jobs/german_credit_demo.yaml --address http://127.0.0.1:$dash"
exec ray start --head --block --node-ip-address 127.0.0.1 --port "$gcs" \
  --dashboard-host 127.0.0.1 --dashboard-port "$dash" --include-dashboard true \
  --num-cpus "$cpus" --disable-usage-stats
