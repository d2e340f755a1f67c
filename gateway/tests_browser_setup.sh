#!/usr/bin/env bash
# Installs what the dashboard's browser tests need: Debian's headless-capable Chromium at /usr/bin/chromium.
# Idempotent and quick when it is already there; `make test` runs it before pytest. The tests drive Chromium
# through the DevTools protocol over a pipe (tests/gateway/cdp.py): no browser download, no extra package.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium is missing and installing it needs root: sudo apt-get install -y chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
