"""Helpers shared by the benchmarks: synthetic data shaped like the real export, timing, results."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from openpyxl import load_workbook

ROOT = Path(__file__).resolve().parents[1]
REAL_EXPORT = ROOT / "data" / "dadosSuprimentos.xlsx"
SHEET = "CUSTO DE MATERIAL E SERVIÇOS"
HEADER = [
    "DEPÓSITO",
    "PRODUTO/SERVIÇO",
    "MATERIAL",
    "FAMÍLIA",
    "NOME FORNEC.",
    "QUANTIDADE",
    "U.M.",
    "DATA REQUISITADA",
    "SOLICITAÇÃO",
    "DATA SOLICITADO",
    "DATA DE COMPRA",
]


async def bare_grpc_server(
    service: str,
    methods: Mapping[str, Callable[[bytes, grpc.aio.ServicerContext], Any]],
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    port: int = 0,
) -> tuple[grpc.aio.Server, int]:
    """A started grpc.aio server on loopback ``port`` (0: a free one) whose ``service`` has ``methods``, each
    taking and giving raw bytes (no (de)serialiser; a coroutine, or a plain function grpc.aio calls on its
    loop): the raw limit the benchmarks compare gRPC services with. Returns the server and its port."""
    server = grpc.aio.server(interceptors=list(interceptors))
    handlers = {name: grpc.unary_unary_rpc_method_handler(method) for name, method in methods.items()}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


def real_lines() -> list[tuple[Any, ...]]:
    """The real export's purchased goods and services lines with dates (the distributions to sample).
    Cells are untyped (openpyxl has no type information); columns 9 and 10 are datetimes."""
    sheet = load_workbook(REAL_EXPORT, read_only=True)[SHEET]
    rows = []
    for row in sheet.iter_rows(min_row=2, max_col=11, values_only=True):
        if (
            isinstance(row[9], dt.datetime)
            and isinstance(row[10], dt.datetime)
            and row[8] not in (None, "N/A")
        ):
            rows.append(row)
    return rows


def _date(d: dt.date) -> str:
    return d.strftime("%d/%m/%Y")


def write_sapiens_csv(path: Path, lines: int, seed: int = 7) -> None:
    """A Sapiens-export CSV (pt-BR: ';' and decimal ',') of `lines` lines sampled from the real export:
    each line keeps a real material / family / unit / site / supplier / quantity and lead time, moved to a
    random day of a three-year window, grouped into requisitions of the real export's sizes."""
    rng = random.Random(seed)
    sample = real_lines()
    start = dt.date(2022, 11, 1)
    written = 0
    requisition = 200_000
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, delimiter=";")
        out.writerow(HEADER)
        while written < lines:
            requisition += 1
            solicited = start + dt.timedelta(days=rng.randrange(3 * 365))
            for _ in range(min(rng.choice((1, 1, 1, 2, 3, 5, 8)), lines - written)):
                site, code, name, family, supplier, qty, unit, _req, _sol, sol_date, buy_date = rng.choice(
                    sample
                )
                lead = (buy_date - sol_date).days
                out.writerow(
                    [
                        site,
                        code,
                        name,
                        family,
                        supplier,
                        str(qty).replace(".", ","),
                        unit,
                        "N/A",
                        requisition,
                        _date(solicited),
                        _date(solicited + dt.timedelta(days=lead)),
                    ]
                )
                written += 1


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def result(
    name: str, value: float, unit: str, baseline: float, target: float | None, **extra: object
) -> None:
    """Print the benchmark's last line: the JSON object `make bench` reads."""
    ratio = value / baseline if baseline else 0.0
    payload = {
        "name": name,
        "value": round(value, 3),
        "unit": unit,
        "baseline": round(baseline, 3),
        "ratio": round(ratio, 3),
        "target": target,
        "cpus": os.cpu_count(),
        **extra,
    }
    print(json.dumps(payload, default=str))


__all__ = ["HEADER", "peak_rss_mb", "percentile", "real_lines", "result", "statistics", "write_sapiens_csv"]
