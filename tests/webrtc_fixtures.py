"""Fixtures shared by the WebRTC end-to-end tests: offline engines and a room server.

Registered for every test module by ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest

from bot.app import interpretation_params, load_engines
from bot.config import load_settings
from pipeline.session import SessionFactory
from transports.webrtc import RoomServer, WebRTCSettings


@pytest.fixture(scope="module")
def offline():
    """The offline profile's settings and loaded engines, once per module."""
    settings = load_settings(profile="offline")
    engines = load_engines(settings)
    yield settings, engines
    engines.close()


@pytest.fixture
async def server(offline):
    """A room server on a free loopback port whose ICE uses 127.0.0.1 only."""
    settings, engines = offline
    webrtc = WebRTCSettings(ice_addresses=["127.0.0.1"])
    factory = SessionFactory(engines, interpretation_params(settings))
    async with RoomServer(factory, webrtc, port=0) as srv:
        yield srv
