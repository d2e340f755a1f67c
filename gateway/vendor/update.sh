#!/usr/bin/env bash
# Re-vendor the dashboard's browser libraries from the npm registry, exactly as pinned in package-lock.json:
#   gateway/vendor/update.sh
# The built files are committed under gateway/static/vendor/, so running the gateway needs neither npm nor
# a CDN. node_modules is created in a temporary directory and removed afterwards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
mkdir -p "$out"
cp "$work/node_modules/uplot/dist/uPlot.iife.min.js" "$out/uPlot.iife.min.js"
cp "$work/node_modules/uplot/dist/uPlot.min.css" "$out/uPlot.min.css"
cp "$work/node_modules/uplot/LICENSE" "$out/uPlot.LICENSE"
version="$(node -p "require('$work/node_modules/uplot/package.json').version")"
echo "uplot $version" > "$out/VERSIONS"
echo "vendored into $out: uplot $version"
