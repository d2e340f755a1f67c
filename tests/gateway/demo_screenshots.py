"""Screenshots of the dashboard on the real data: `python -m tests.gateway.demo_screenshots [OUT_DIR]`.

Starts the whole platform in-process the way `nova demo` does (embedded profile, a temporary state
directory, free ports), loads the real export through the ingestion API, signs in as the development
planner in headless Chromium and saves the overview, a material x site page and the model page into OUT_DIR
(default docs/screenshots). Needs a trained model in ./models (`make models`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
from pathlib import Path

from services.demo import Demo
from tests.gateway.cdp import Chromium


async def shoot(out: Path, models: Path = Path("models"), data: Path = Path("data")) -> None:
    with tempfile.TemporaryDirectory(prefix="nova-shots-") as state:
        demo = Demo(
            models=models,
            state=Path(state),
            ports={"ingestion": 0, "analytics": 0, "forecast": 0, "gateway": 0},
        )
        await demo.start()
        try:
            await demo.load(data, echo=lambda line: print(line, flush=True))
            await demo.wait_settled()  # reorder policies in place, as a planner sees them after a while
            async with Chromium.launch() as browser:
                page = await browser.new_page(width=1366, height=900)
                await page.goto(demo.url + "/")
                await page.wait_for("document.querySelector('#login-user') !== null")
                await page.fill("#login-user", "planner")
                await page.fill("#login-password", demo.passwords["planner"])
                await page.click("#login-submit")
                await page.wait_for("document.querySelectorAll('#kpis .card').length > 0", within=60)
                await page.wait_for(
                    "document.querySelectorAll('#overview-risk tbody tr').length > 0", within=60
                )
                await page.wait_for("document.getElementById('live-dot').dataset.state === 'on'")
                await asyncio.sleep(1)
                await page.screenshot(out / "overview.png")
                await page.evaluate("document.querySelector('#overview-risk tbody tr').click()")
                await page.wait_for("document.querySelector('#demand-chart canvas') !== null", within=60)
                await page.wait_for("!document.querySelector('#series-policy .loading')", within=60)
                await asyncio.sleep(1)
                await page.screenshot(out / "series.png", full_page=True)
                await page.evaluate("location.hash = '#/models'")
                await page.wait_for("document.querySelector('#models table') !== null", within=60)
                await asyncio.sleep(0.5)
                await page.screenshot(out / "model.png", full_page=True)
                errors = page.errors()
                if errors:
                    print("page errors:", *errors, sep="\n  ")
        finally:
            await demo.stop()


if __name__ == "__main__":
    if not os.environ.get("NOVA_JWT_SECRET") and not os.environ.get("NOVA_JWT_SECRET_FILE"):
        # A throwaway signing key for this run only: the platform runs in this process and ends with it.
        os.environ["NOVA_JWT_SECRET"] = secrets.token_hex(32)
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
    asyncio.run(shoot(target))
    print(f"screenshots in {target}")
