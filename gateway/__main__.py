"""`python -m gateway [serve]`: the HTTP gateway in the foreground, until SIGTERM/SIGINT.

`python -m gateway users create-dev --file PATH`: write the development users (planner, viewer, admin) with
new random passwords, printed once. `python -m gateway users add --file PATH --role ROLE USERNAME`: add or
replace one user, the password read from the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import sys
from pathlib import Path

from gateway.server import build_gateway
from gateway.settings import GatewaySettings
from gateway.users import add_user, create_dev_users
from services.kit.logging import configure_logging


async def _serve(settings: GatewaySettings) -> None:
    gateway = await build_gateway(settings)
    await gateway.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await gateway.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gateway (default)")
    users = sub.add_parser("users", help="manage the users file").add_subparsers(dest="action", required=True)
    dev = users.add_parser("create-dev", help="development users with random passwords (printed once)")
    dev.add_argument("--file", type=Path, required=True)
    add = users.add_parser("add", help="add or replace one user")
    add.add_argument("--file", type=Path, required=True)
    add.add_argument("--role", required=True, choices=["viewer", "planner", "admin"])
    add.add_argument("username")
    args = parser.parse_args(argv)

    if args.command == "users":
        if args.action == "create-dev":
            for name, password in create_dev_users(args.file).items():
                print(f"{name}\t{password}")
            print(f"(development users written to {args.file}; the passwords are not stored anywhere)")
        else:
            password = getpass.getpass(f"password for {args.username}: ")
            if not password or password != getpass.getpass("again: "):
                print("passwords empty or different", file=sys.stderr)
                return 2
            add_user(args.file, args.username, args.role, password)
        return 0

    settings = GatewaySettings()
    configure_logging(settings.log_level)
    asyncio.run(_serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
