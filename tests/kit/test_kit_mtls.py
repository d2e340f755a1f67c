"""Mutual TLS: with NOVA_TLS_* set, a server accepts only clients whose certificate its CA signed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.kit.auth import MethodPolicy
from services.kit.clients import open_channel
from services.kit.server import GrpcServer
from services.kit.settings import ServiceSettings


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key")
    _openssl("req", "-x509", *key, "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}", cwd=folder)


def _leaf(folder: Path, name: str, ca: str, *, usage: str) -> None:
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key")
    _openssl("req", *key, "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    ext = folder / f"{name}.ext"
    ext.write_text(f"subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\n")
    signer = ("-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial")
    _openssl("x509", "-req", "-in", f"{name}.csr", *signer, "-out", f"{name}.crt", "-days", "2",
             "-extfile", ext.name, cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _leaf(folder, "server", "ca", usage="serverAuth")
    _leaf(folder, "client", "ca", usage="clientAuth")
    _leaf(folder, "intruder", "other-ca", usage="serverAuth,clientAuth")
    # The gateway serves HTTPS and is a client of the services: one certificate for both roles.
    _leaf(folder, "gateway", "ca", usage="serverAuth,clientAuth")
    return folder


async def _check(target: str, **tls: Path) -> int:
    async with open_channel(target, default_timeout=3, **tls) as channel:  # type: ignore[arg-type]
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), wait_for_ready=False
        )
        return reply.status


async def test_only_clients_with_a_certificate_from_our_ca_get_in(pki: Path) -> None:
    settings = ServiceSettings(
        port=0, tls_cert_file=pki / "server.crt", tls_key_file=pki / "server.key", tls_ca_file=pki / "ca.crt"
    )
    server = GrpcServer(settings, policy=MethodPolicy({}), jwt_key=b"k" * 32)
    await server.start()
    target = f"localhost:{server.port}"
    try:
        good = await _check(
            target,
            ca_cert_path=pki / "ca.crt",
            client_cert_path=pki / "client.crt",
            client_key_path=pki / "client.key",
        )
        assert good == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as no_cert:
            await _check(target, ca_cert_path=pki / "ca.crt")
        assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as other_ca:
            await _check(
                target,
                ca_cert_path=pki / "ca.crt",
                client_cert_path=pki / "intruder.crt",
                client_key_path=pki / "intruder.key",
            )
        assert other_ca.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            async with grpc.aio.insecure_channel(target) as channel:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
