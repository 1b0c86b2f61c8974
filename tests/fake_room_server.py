"""A room server with fake engines in its own process, for tests that must kill it hard:
``python -m tests.fake_room_server PORT`` prints ``ready URL`` once it listens."""

from __future__ import annotations

import asyncio
import sys

from pipeline.session import SessionFactory
from tests.fakes import fake_engines
from transports.webrtc import RoomServer, WebRTCSettings


async def serve(port: int) -> None:
    async with RoomServer(SessionFactory(fake_engines()), WebRTCSettings(ice_addresses=["127.0.0.1"]), port=port) as srv:
        print("ready", srv.url, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
