#!/usr/bin/env bash
# Start a lean MLflow tracking server on 127.0.0.1 (never 0.0.0.0 unless you
# mean it: set MLFLOW_HOST). Usage: mlflow_config/start_server.sh [STORE_DIR] [PORT]
#   STORE_DIR  holds mlflow.db and the artifacts (default ./mlflow_server)
#   PORT       default 5000
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:PORT (see example.env).
set -euo pipefail
store="${1:-./mlflow_server}"
port="${2:-5000}"
mkdir -p "$store/artifacts"
store="$(cd "$store" && pwd)"
# Lean mode: no background job runner, one worker (ready in ~8 s).
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec mlflow server --host "${MLFLOW_HOST:-127.0.0.1}" --port "$port" --workers 1 \
  --backend-store-uri "sqlite:///$store/mlflow.db" \
  --artifacts-destination "$store/artifacts"
