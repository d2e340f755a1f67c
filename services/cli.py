"""`nova`: the platform's command line.

    nova demo                   every service on the embedded profile, real data loaded, dashboard URL
    nova serve SERVICE          one service (ingestion | analytics | forecast | gateway) in the foreground
    nova upload FILE...         stream files to ingestion, with progress and a verdict summary
    nova token --role ROLE      a development bearer token
    nova health                 grpc.health.v1 status of the services

Without NOVA_JWT_SECRET / NOVA_JWT_SECRET_FILE, the commands use the development key that
`nova demo` generates in .nova/dev-jwt-secret (development only; never used in production).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["main"]

STATE_DIR = Path(".nova")
DEV_KEY_FILE = STATE_DIR / "dev-jwt-secret"
SERVICES = {"ingestion": 50051, "analytics": 50052, "forecast": 50053}
CHUNK_BYTES = 1 << 20


def ensure_dev_key() -> Path:
    """Generate the development signing key once (0600), outside git."""
    if not DEV_KEY_FILE.exists():
        STATE_DIR.mkdir(exist_ok=True)
        fd = os.open(DEV_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return DEV_KEY_FILE


def _use_dev_key_if_unconfigured() -> None:
    if not os.environ.get("NOVA_JWT_SECRET") and not os.environ.get("NOVA_JWT_SECRET_FILE"):
        if DEV_KEY_FILE.exists():
            os.environ["NOVA_JWT_SECRET_FILE"] = str(DEV_KEY_FILE)


# -- token ------------------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    from services.kit.settings import CommonSettings
    from services.kit.tokens import mint_dev_token

    print(mint_dev_token(CommonSettings(), args.role, subject=args.subject, ttl_seconds=args.ttl))
    return 0


# -- health -----------------------------------------------------------------------------------------


async def _health(targets: dict[str, str]) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    worst = 0
    for name, target in targets.items():
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=3
                )
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                status = f"unreachable ({exc.code().name})"
        ok = status == "SERVING"
        worst = worst if ok else 1
        print(f"{name:<10} {target:<22} {status}")
    return worst


def cmd_health(args: argparse.Namespace) -> int:
    targets = {name: f"{args.host}:{port}" for name, port in SERVICES.items()}
    if args.target:
        targets = {"service": args.target}
    return asyncio.run(_health(targets))


# -- upload -----------------------------------------------------------------------------------------


async def upload_file(
    target: str,
    token: str,
    path: Path,
    *,
    key: str | None = None,
    fmt: int = 0,
    record_type: str = "",
    series_id: str = "",
    progress: bool = True,
) -> object:
    """Stream one file to IngestionService.UploadFile; returns the UploadFileResponse."""
    from novacorrente.ingestion.v1 import ingestion_pb2 as pb
    from novacorrente.ingestion.v1 import ingestion_pb2_grpc
    from tqdm import tqdm

    from services.kit.clients import open_channel

    size = (await asyncio.to_thread(path.stat)).st_size
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=not progress, leave=False)

    async def parts() -> AsyncIterator[pb.UploadFileRequest]:
        yield pb.UploadFileRequest(
            header=pb.UploadHeader(
                filename=path.name,
                format=fmt,  # type: ignore[arg-type]  # an ingestion.v1.FileFormat value
                record_type=record_type,
                series_id=series_id,
                idempotency_key=key or f"upload:{path.name}:{uuid.uuid4().hex}",
                size_bytes=size,
            )
        )
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
                bar.update(len(chunk))
                yield pb.UploadFileRequest(chunk=chunk)

    async with open_channel(target, token=token, default_timeout=600) as channel:
        try:
            return await ingestion_pb2_grpc.IngestionServiceStub(channel).UploadFile(parts(), timeout=1800)
        finally:
            bar.close()


def summarize(path: Path, answer: object) -> str:
    c = answer.counts  # type: ignore[attr-defined]
    text = (
        f"{path.name}: {c.accepted} accepted, {c.duplicate} duplicate, {c.superseded} superseded, "
        f"{c.rejected} rejected, {c.skipped} skipped; watermark {answer.data_watermark}"  # type: ignore[attr-defined]
    )
    if answer.replayed:  # type: ignore[attr-defined]
        text += " (replayed: nothing new written)"
    return text


def cmd_upload(args: argparse.Namespace) -> int:
    from services.kit.settings import CommonSettings
    from services.kit.tokens import mint_dev_token

    token = args.token or mint_dev_token(CommonSettings(), "ingestor", subject="nova-cli")

    async def run() -> int:
        failures = 0
        for name in args.files:
            path = Path(name)
            answer = await upload_file(args.target, token, path, key=args.key, record_type=args.record_type)
            print(summarize(path, answer))
            for v in list(answer.exceptions)[: args.show]:  # type: ignore[attr-defined]
                problems = "; ".join(f"{p.field} {p.reason}: {p.description}" for p in v.violations)
                print(f"  line {v.index}: {v.verdict and _verdict_name(v.verdict)} {problems}")
            if omitted := answer.exceptions_omitted:  # type: ignore[attr-defined]
                print(f"  ({omitted} more lines not accepted as new are counted, not listed)")
            failures += answer.counts.rejected > 0  # type: ignore[attr-defined]
        # Scripts can tell: 1 when any file had lines rejected (they are in the quarantine).
        return 1 if failures else 0

    return asyncio.run(run())


def _verdict_name(value: int) -> str:
    from novacorrente.ingestion.v1 import ingestion_pb2 as pb

    return pb.Verdict.Name(value).removeprefix("VERDICT_").lower()  # type: ignore[arg-type]


# -- serve / demo -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import runpy

    module = "gateway" if args.service == "gateway" else f"services.{args.service}"
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo

    ensure_dev_key()
    _use_dev_key_if_unconfigured()
    return asyncio.run(
        run_demo(models=Path(args.models), data=Path(args.data), exit_when_ready=args.exit_when_ready)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nova", description="Nova Corrente demand platform")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run everything on the embedded profile with the real data")
    p.add_argument("--models", default="models", help="model repository (built by `make models`)")
    p.add_argument("--data", default="data", help="folder with the real data files")
    p.add_argument("--exit-when-ready", action="store_true", help="stop once ready (smoke test)")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("serve", help="run one service in the foreground")
    p.add_argument("service", choices=[*SERVICES, "gateway"])
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("upload", help="upload files to ingestion")
    p.add_argument("files", nargs="+")
    p.add_argument("--target", default=f"127.0.0.1:{SERVICES['ingestion']}")
    p.add_argument("--token", help="bearer token (default: a development ingestor token)")
    p.add_argument("--key", help="idempotency key (default: a new one per file)")
    p.add_argument("--record-type", default="", help="record type of a generic CSV/Parquet file")
    p.add_argument("--show", type=int, default=20, help="non-accepted lines to print per file")
    p.set_defaults(fn=cmd_upload)

    p = sub.add_parser("token", help="mint a development token")
    p.add_argument("--role", required=True, choices=["viewer", "planner", "ingestor", "admin"])
    p.add_argument("--subject")
    p.add_argument("--ttl", type=float, default=8 * 3600, help="lifetime in seconds")
    p.set_defaults(fn=cmd_token)

    p = sub.add_parser(
        "health", help="grpc.health.v1 status of the gRPC services, in plaintext (the gateway: GET /readyz)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--target", help="one service host:port")
    p.set_defaults(fn=cmd_health)

    args = parser.parse_args(argv)
    if args.command != "demo":
        _use_dev_key_if_unconfigured()
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
