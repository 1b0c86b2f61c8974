"""WebRTC rooms: the embedded room server, its browser page and the pipecat transport.

The settings and tokens import without aiortc (the configuration and ``polyvox token``
need them everywhere); the server, transport and client need the ``webrtc`` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

from transports.webrtc.settings import WebRTCSettings
from transports.webrtc.tokens import SECRET_ENV, make_token, room_secret, verify_token

__all__ = [
    "SECRET_ENV",
    "RoomServer",
    "RoomSession",
    "WebRTCRoomInputTransport",
    "WebRTCRoomOutputTransport",
    "WebRTCRoomParams",
    "WebRTCRoomTransport",
    "WebRTCSettings",
    "check_security",
    "make_token",
    "room_secret",
    "serve_webrtc",
    "verify_token",
]

_LAZY = {
    "RoomServer": "transports.webrtc.server",
    "RoomSession": "transports.webrtc.server",
    "check_security": "transports.webrtc.server",
    "serve_webrtc": "transports.webrtc.server",
    "WebRTCRoomInputTransport": "transports.webrtc.transport",
    "WebRTCRoomOutputTransport": "transports.webrtc.transport",
    "WebRTCRoomParams": "transports.webrtc.transport",
    "WebRTCRoomTransport": "transports.webrtc.transport",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'transports.webrtc' has no attribute {name!r}")
    try:
        import aiortc  # noqa: F401
    except ImportError as exc:
        raise ImportError("WebRTC rooms need aiortc: pip install 'polyvox[webrtc]'") from exc
    return getattr(importlib.import_module(module), name)
