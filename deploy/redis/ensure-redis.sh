#!/usr/bin/env bash
# Make sure a Redis answers on 127.0.0.1:6379 for the shared-state tests: use the one that is
# there, or start Debian's redis-server (installing it with apt when missing), in-memory only.
set -euo pipefail
PORT=${REDIS_PORT:-6379}
ping() { redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG || python3 - "$PORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
PY
}
if ping 2>/dev/null; then echo "[redis] answering on 127.0.0.1:$PORT"; exit 0; fi
if ! command -v redis-server >/dev/null; then
  echo "[redis] installing redis-server (Debian package)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null
fi
echo "[redis] starting redis-server on 127.0.0.1:$PORT"
redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no \
  --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/switchyard-redis.log"
for _ in $(seq 1 100); do ping 2>/dev/null && { echo "[redis] up"; exit 0; }; sleep 0.1; done
echo "[redis] did not start; see ${TMPDIR:-/tmp}/switchyard-redis.log" >&2; exit 1
