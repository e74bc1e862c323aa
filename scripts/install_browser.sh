#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver (used by the report's browser tests) when missing.
# Needs root or sudo; prints what to do instead when neither is available.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""
elif command -v sudo >/dev/null; then SUDO="sudo"
else
    echo "install_browser: chromium/chromedriver missing and no root: run 'apt-get install chromium chromium-driver' as root; browser tests will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium chromium-driver
