"""`python -m services.forecast`: run forecast-serving until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio

from services.forecast.app import build_app
from services.forecast.settings import ForecastSettings
from services.kit.logging import configure_logging


async def _serve(settings: ForecastSettings) -> None:
    app = await build_app(settings)
    await app.start()
    await app.server.run_until_signal()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.forecast", description=__doc__)
    parser.parse_args(argv)
    settings = ForecastSettings()
    configure_logging(settings.log_level)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
