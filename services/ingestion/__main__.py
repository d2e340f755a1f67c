"""`python -m services.ingestion [serve|migrate]`: run the ingestion service, or only migrate."""

from __future__ import annotations

import argparse
import asyncio

from services.ingestion.app import build_app
from services.ingestion.reading import tune_collector
from services.ingestion.settings import IngestionSettings
from services.ingestion.sql import open_database
from services.kit.logging import configure_logging


async def _serve(settings: IngestionSettings) -> None:
    app = await build_app(settings)
    tune_collector()
    await app.start()
    # The server is started: run_until_signal only waits for SIGTERM/SIGINT, then stops in order.
    await app.server.run_until_signal()


async def _migrate(settings: IngestionSettings) -> None:
    db = await open_database(settings.database_url)
    try:
        await db.migrate()
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.ingestion", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = IngestionSettings()
    configure_logging(settings.log_level)
    asyncio.run(_migrate(settings) if args.command == "migrate" else _serve(settings))


if __name__ == "__main__":
    main()
