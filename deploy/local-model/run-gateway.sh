#!/usr/bin/env bash
# `make run`: start the local open model in the background, then the gateway in the
# foreground with the shipped default policy. Ctrl-C stops both.
#
#   LOCAL_MODEL_PORT (default 8080)   where llama-server listens
#   SWITCHYARD_PORT  (default 4000)   where the gateway listens
#   OPENAI_API_KEY / ANTHROPIC_API_KEY / GEMINI_API_KEY   enable closed fallbacks when set
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT=${LOCAL_MODEL_PORT:-8080}
PIDFILE=$(mktemp -t switchyard-llama.XXXXXX)

bash "$HERE/llamacpp.sh" install >/dev/null
if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
  echo "[run] something already answers on 127.0.0.1:$PORT/health; using it as the local model"
else
  LLAMA_LOG=${LLAMA_LOG:-$ROOT/.local/llama-server.log}
  mkdir -p "$(dirname "$LLAMA_LOG")"
  LLAMA_LOG=$LLAMA_LOG bash "$HERE/llamacpp.sh" start "$PORT" "$PIDFILE" >/dev/null
  trap 'bash "$HERE/llamacpp.sh" stop "$PIDFILE"' EXIT
  echo "[run] local model up on 127.0.0.1:$PORT (log: $LLAMA_LOG)"
fi
export SWITCHYARD_LOCAL_MODEL_URL="http://127.0.0.1:$PORT/v1"
cat <<MSG
[run] gateway on http://${SWITCHYARD_HOST:-127.0.0.1}:${SWITCHYARD_PORT:-4000}/v1 — try:
  curl -s localhost:${SWITCHYARD_PORT:-4000}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{"model":"chat-default","messages":[{"role":"user","content":"Hello"}],"max_tokens":16}'
MSG
"$ROOT/.venv/bin/switchyard" serve --policy "${SWITCHYARD_POLICY:-$ROOT/policies/default.yaml}" "$@"
