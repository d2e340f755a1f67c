"""`python -m services.analytics`: run one analytics-query replica until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio

from services.analytics.app import build_app
from services.analytics.settings import AnalyticsSettings
from services.kit.logging import configure_logging


async def _serve(settings: AnalyticsSettings) -> None:
    app = await build_app(settings)
    await app.start()
    # run_until_signal sees the server already started and only waits for the signal, then stops.
    await app.server.run_until_signal()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.analytics", description=__doc__)
    parser.parse_args(argv)
    settings = AnalyticsSettings()
    configure_logging(settings.log_level)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
