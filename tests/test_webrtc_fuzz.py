"""Hypothesis against the real room server's whole HTTP API: random methods, paths,
headers, bodies and tokens, on a real socket. No request may get a 5xx."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from pipeline.session import SessionFactory
from tests.fakes import fake_engines
from tests.test_webrtc_http_security import (
    ALLOWED_ORIGIN,
    REQUESTS,
    SECRET,
    LiveServer,
    _raw_request,
)
from transports.webrtc import RoomServer, WebRTCSettings


async def _start_room_server() -> tuple[int, Callable[[], Awaitable[None]]]:
    """A RoomServer (fake engines, tokens required, short join deadline)."""
    webrtc = WebRTCSettings(
        ice_addresses=["127.0.0.1"], allowed_origins=[ALLOWED_ORIGIN], allowed_hosts=["rooms.example.org"],
        require_token=True, connect_timeout_s=1.0,
    )
    server = RoomServer(SessionFactory(fake_engines()), webrtc, port=0, secret=SECRET)
    await server.start()
    return server.port, server.stop


@pytest.fixture(scope="module")
def real_server() -> Iterator[LiveServer]:
    server = LiveServer(_start_room_server)
    yield server
    print(f"\nHTTP fuzz of the room server: {server.sent} requests, statuses {dict(sorted(server.statuses.items()))}")
    server.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(request=REQUESTS)
def test_no_request_to_the_room_server_gets_a_5xx(real_server, request):
    status = real_server.send(_raw_request(*request))
    assert status < 500, request
