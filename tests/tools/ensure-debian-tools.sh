#!/usr/bin/env bash
# Debian packages the tests run for real: headless Chromium (tests/browser) and Prometheus
# (tests/e2e/test_prometheus.py). Nothing to do when both binaries exist; else installs what
# is missing with apt (waits for another running apt/dpkg instead of failing).
set -euo pipefail

declare -A BINARIES=([chromium]=/usr/bin/chromium [prometheus]=/usr/bin/prometheus)
missing=()
for package in "${!BINARIES[@]}"; do
  [ -x "${BINARIES[$package]}" ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -y)

echo "[switchyard] installing ${missing[*]} (Debian) for the tests" >&2
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
  "${APT[@]}" update
fi
if ! "${APT[@]}" install --no-install-recommends "${missing[@]}"; then
  "${APT[@]}" update  # a stale package index: refresh it once and retry
  "${APT[@]}" install --no-install-recommends "${missing[@]}"
fi
# Debian starts the prometheus service on install; the tests run their own on free ports
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
  $SUDO systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
for package in "${missing[@]}"; do
  if [ ! -x "${BINARIES[$package]}" ]; then
    echo "[switchyard] ${BINARIES[$package]} is still missing after installing $package" >&2
    exit 1
  fi
done
