# syntax=docker/dockerfile:1.7
# forecast: `python -m services.forecast` (gRPC :50053), models read-only from /models.
# Build from the repository root (the context must hold pyproject.toml and uv.lock):
#   docker build -f deploy/docker/forecast.Dockerfile -t nova-corrente/forecast:0.1.0 .

# ---------------------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder
# uv at the version that wrote uv.lock, from PyPI; the interpreter is the base image's own, so the
# virtualenv's python link is valid in the runtime stage (same base image).
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
# The repository layout under /app, as in a checkout: code that finds files relative to itself
# (deploy/migrations) finds them in the image too.
WORKDIR /app
# Dependencies first, from the lock alone: this layer is rebuilt only when pyproject.toml or uv.lock change,
# not on every code change.
# Base dependencies only: no training stack (tests/deploy/test_dependency_sets.py).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# Then the project itself, installed in place (editable) and compiled to bytecode now: at run time the
# root filesystem is read-only.
COPY README.md ./
COPY protos/python/ protos/python/
COPY services/ services/
COPY gateway/ gateway/
COPY ml_training/ ml_training/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
 && python -m compileall -q services gateway ml_training protos/python

# ---------------------------------------------------------------------------------------------------------
# The same base image as the builder: the virtualenv's python link points into it.
FROM python:3.11-slim-bookworm AS runtime
# Mount point of the model repository (mounted read-only here).
# A fixed uid/gid, the one Kubernetes (runAsUser: 10001) and compose (user: "10001:10001") name.
RUN groupadd --system --gid 10001 nova \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin nova \
 && mkdir -p /models && chown 10001:10001 /models
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
# Bytecode was compiled at build time; at run time the root filesystem is read-only, so Python must not
# try to write it. HOME points at /tmp for libraries that keep a per-user cache.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    NOVA_FORECAST_HOST=0.0.0.0 \
    NOVA_FORECAST_PORT=50053 \
    NOVA_FORECAST_MODEL_REPOSITORY=/models
WORKDIR /app
USER 10001:10001
EXPOSE 50053
# For `docker run`; compose and Kubernetes declare their own checks (the kubelet ignores this one).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["python", "-m", "services.kit.healthcheck", "50053"]
# Exec form: python is PID 1 and receives SIGTERM itself (health NOT_SERVING, drain, close pools).
ENTRYPOINT ["python", "-m", "services.forecast"]
