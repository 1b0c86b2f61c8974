"""Hypothesis against the real room server's whole HTTP API: random methods, paths,
headers, bodies and tokens, on a real socket. No request may get a 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from pipeline.session import SessionFactory
from tests.fakes import fake_engines
from tests.test_webrtc_http_security import ALLOWED_ORIGIN, REQUESTS, SECRET, _raw_request
from transports.webrtc import RoomServer, WebRTCSettings


class _RealServer:
    """A RoomServer (fake engines, tokens required) on a loop of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        webrtc = WebRTCSettings(
            ice_addresses=["127.0.0.1"], allowed_origins=[ALLOWED_ORIGIN], allowed_hosts=["rooms.example.org"],
            require_token=True, connect_timeout_s=1.0,
        )
        self.server = RoomServer(SessionFactory(fake_engines()), webrtc, port=0, secret=SECRET)
        self.loop.run_until_complete(self.server.start())
        self.sent = 0
        self.statuses: dict[int, int] = {}

    async def _send(self, raw: bytes) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        try:
            writer.write(raw)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout=20)
        finally:
            writer.close()
        parts = status_line.split()
        assert len(parts) >= 2 and parts[0].startswith(b"HTTP/1."), status_line
        return int(parts[1])

    def send(self, raw: bytes) -> int:
        status = self.loop.run_until_complete(self._send(raw))
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return status

    def close(self) -> None:
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def real_server() -> Iterator[_RealServer]:
    server = _RealServer()
    yield server
    print(f"\nHTTP fuzz of the room server: {server.sent} requests, statuses {dict(sorted(server.statuses.items()))}")
    server.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(request=REQUESTS)
def test_no_request_to_the_room_server_gets_a_5xx(real_server, request):
    status = real_server.send(_raw_request(*request))
    assert status < 500, request
