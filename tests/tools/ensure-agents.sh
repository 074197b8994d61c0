#!/usr/bin/env bash
# The real coding agents that tests/e2e/test_agents.py runs through the gateway, from the npm
# registry at pinned exact versions, installed once into a cache outside the repo:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/agents/<name>-<version>/
# A complete install (marker file .installed) is reused as it is; an incomplete one is redone.
# Prints "<agent> <absolute path of its binary>" per agent on stdout; log lines go to stderr.
# Needs npm (and nothing but the npm registry). Fails loudly when an agent cannot be installed.
set -euo pipefail

# agent name | npm package | exact version | binary inside node_modules/.bin
AGENTS=(
  "claude|@anthropic-ai/claude-code|2.1.332|claude"
  "codex|@openai/codex|0.171.0|codex"
)

if ! command -v npm >/dev/null 2>&1; then
  echo "[switchyard] ensure-agents: npm is missing (apt-get install npm); cannot install the agents" >&2
  exit 1
fi

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/agents"
mkdir -p "$CACHE"

for entry in "${AGENTS[@]}"; do
  IFS='|' read -r agent package version binary <<<"$entry"
  dir="$CACHE/${package//\//+}-$version"
  bin="$dir/node_modules/.bin/$binary"
  if [ ! -f "$dir/.installed" ] || [ ! -x "$bin" ]; then
    echo "[switchyard] installing $package@$version into $dir" >&2
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    printf '{"name":"switchyard-agent-%s","private":true}\n' "$agent" >"$dir.tmp/package.json"
    # --include=optional: both packages ship their native binary as an optional platform dependency
    (cd "$dir.tmp" && npm install --no-audit --no-fund --no-save --include=optional \
      --save-exact --loglevel=error "$package@$version" >&2)
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    bin="$dir/node_modules/.bin/$binary"
  fi
  # the binary must run here (this catches a missing native platform package)
  if ! out="$("$bin" --version </dev/null 2>&1)"; then
    echo "[switchyard] $package@$version in $dir does not run: $out" >&2
    exit 1
  fi
  case "$out" in
    *"$version"*) ;;
    *) echo "[switchyard] $bin reports '$out', expected version $version" >&2; exit 1 ;;
  esac
  touch "$dir/.installed"
  echo "$agent $bin"
done
