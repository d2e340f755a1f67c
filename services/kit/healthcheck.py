"""`python -m services.kit.healthcheck PORT [HOST [SERVICE]]`: exit 0 when the gRPC server on
HOST:PORT answers grpc.health.v1 Check for SERVICE ("" = overall readiness, "liveness" = the process
serves) with SERVING, 1 otherwise. Container healthchecks use it: the images need no shell and no
separate probe binary."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(target: str) -> grpc.Channel:
    """Plaintext, or mutual TLS with the same NOVA_TLS_* files the service uses."""
    paths = {name: os.environ.get(f"NOVA_TLS_{name}_FILE") for name in ("CA", "CERT", "KEY")}
    if not any(paths.values()):
        return grpc.insecure_channel(target)

    def read(name: str) -> bytes | None:
        path = paths[name]
        return Path(path).read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(read("CA"), read("KEY"), read("CERT"))
    return grpc.secure_channel(target, credentials)


def check(host: str, port: int, service: str = "", timeout: float = 3.0) -> bool:
    with _channel(f"{host}:{port}") as channel:
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        print("usage: python -m services.kit.healthcheck PORT [HOST [SERVICE]]", file=sys.stderr)
        return 2
    host = argv[1] if len(argv) > 1 else "127.0.0.1"
    service = argv[2] if len(argv) > 2 else ""
    return 0 if check(host, int(argv[0]), service) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
