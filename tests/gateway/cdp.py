"""A small Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (no websocket, no extra package).

Chromium reads commands on fd 3 and writes replies and events on fd 4, each message JSON terminated by NUL.
Enough for the dashboard tests: open a page, evaluate JavaScript, wait for a condition, set the viewport,
take screenshots, and collect JavaScript errors and console/CSP errors.

    async with Chromium.launch() as browser:
        page = await browser.new_page(width=1366, height=900)
        await page.goto("http://127.0.0.1:8080/")
        await page.wait_for("document.querySelector('#login-user') !== null")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "CDPError", "Chromium", "Page"]

CHROMIUM = os.environ.get("NOVA_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
]


class CDPError(RuntimeError):
    pass


def _above_ten(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class Chromium:
    def __init__(
        self, process: asyncio.subprocess.Process, reader: asyncio.StreamReader, write_fd: int, profile: str
    ):
        self._process = process
        self._reader = reader
        self._write_fd = write_fd
        self._profile = profile
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[tuple[str | None, asyncio.Queue[dict[str, Any]] | list[dict[str, Any]]]] = []
        self._pump = asyncio.create_task(self._read_loop(), name="cdp-reader")

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, executable: str = CHROMIUM) -> AsyncIterator[Chromium]:
        profile = tempfile.mkdtemp(prefix="nova-chromium-")
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        # Chromium wants its ends on fds 3 and 4. bash moves them there right before exec, so that no Python
        # code runs in the forked child (gRPC's fork handlers make that unsafe here). The ends first go above
        # 10 so that moving one cannot overwrite the other (dash cannot redirect fds above 9: bash it is).
        cmd_r, evt_w = (_above_ten(fd) for fd in (cmd_r, evt_w))
        log = await asyncio.to_thread(open, Path(profile) / "chromium.log", "wb")
        process = await asyncio.create_subprocess_exec(
            "/bin/bash",
            "-c",
            f'exec "$0" "$@" 3<&{cmd_r} 4>&{evt_w} {cmd_r}<&- {evt_w}>&-',
            executable,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(cmd_r, evt_w),
        )
        log.close()
        os.close(cmd_r)
        os.close(evt_w)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=256 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(evt_r, "rb", 0))
        browser = cls(process, reader, cmd_w, profile)
        try:
            try:
                await browser.send("Browser.getVersion")
            except (OSError, CDPError) as exc:
                tail = (Path(profile) / "chromium.log").read_text(errors="replace")[-3000:]
                raise CDPError(f"chromium did not start: {exc}\n{tail}") from exc
            yield browser
        finally:
            await browser.close()

    async def _read_loop(self) -> None:
        while True:
            try:
                raw = await self._reader.readuntil(b"\0")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                break
            message = json.loads(raw[:-1])
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            for session, sink in self._listeners:
                if session is None or session == message.get("sessionId"):
                    if isinstance(sink, list):
                        sink.append(message)
                    else:
                        sink.put_nowait(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CDPError("browser closed the pipe"))

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        within: float = 30,
    ) -> dict[str, Any]:
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        reply = await asyncio.wait_for(future, within)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def listen(self, session: str | None, sink: asyncio.Queue[dict[str, Any]] | list[dict[str, Any]]) -> None:
        self._listeners.append((session, sink))

    async def new_page(self, *, width: int = 1366, height: int = 900, mobile: bool = False) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        self.listen(page.session, page.events)
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        await page.viewport(width, height, mobile=mobile)
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("Browser.close", within=5)
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        with contextlib.suppress(OSError):
            os.close(self._write_fd)
        shutil.rmtree(self._profile, ignore_errors=True)


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser = browser
        self.session = session
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session, **kw)

    async def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    async def goto(self, url: str, within: float = 15) -> None:
        start = len(self.events)
        await self.send("Page.navigate", {"url": url})
        await self._wait_event("Page.loadEventFired", start, within)

    async def _wait_event(self, method: str, start: int, within: float) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            for event in self.events[start:]:
                if event.get("method") == method:
                    return event
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no {method} within {within}s")
            await asyncio.sleep(0.02)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, within: float = 15) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{expression!r} still falsy after {within}s; errors: {self.errors()}")
            await asyncio.sleep(0.05)

    async def click(self, selector: str) -> None:
        await self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            f" if (!el) throw new Error('no element ' + {json.dumps(selector)}); el.click(); }})()"
        )

    async def fill(self, selector: str, value: str) -> None:
        await self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            f" el.value = {json.dumps(value)}; el.dispatchEvent(new Event('input', {{bubbles: true}})); }})()"
        )

    async def screenshot(self, path: Path, *, full_page: bool = False) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = base64.b64decode((await self.send("Page.captureScreenshot", params))["data"])
        await asyncio.to_thread(_write, path, data)
        return data

    def errors(self) -> list[str]:
        """JavaScript exceptions and error-level console / browser log entries (CSP violations included)."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(
                    details.get("exception", {}).get("description") or details.get("text", "exception")
                )
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                )
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        return out
