"""Settings of the WebRTC room server (mounted by ``bot/config.py`` as ``webrtc:``)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from transports.webrtc.hosts import parse_host_entry

__all__ = ["WebRTCSettings"]

_ORIGIN = re.compile(r"\Ahttps?://(?:[a-z0-9._-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?\Z")


class WebRTCSettings(BaseModel):
    """The room server's limits, security and sound.

    Attributes:
        max_participants: Participants per room; one more gets 409.
        max_rooms: Open rooms per server; a join that would open one more gets 429.
        allowed_origins: Browser origins (``https://example.org``) allowed to call the
            API besides the server's own; requests without ``Origin`` (non-browser
            clients) are judged by their token alone. Their pages get CORS answers
            (preflight, ``Access-Control-Allow-Origin``).
        allowed_hosts: Names (or addresses) clients reach the server by, besides the
            loopback ones (always allowed) and ``server.host`` itself: requests with
            any other ``Host`` header get 421 (DNS rebinding). ``rooms.example.org``
            (any port), ``rooms.example.org:8443``, ``.example.org`` (and every name
            under it) or ``*`` (any: a proxy in front checks hosts).
        require_token: Whether joining needs a room token. ``None``: required when a
            secret is set or the server listens on a non-loopback address (where a
            secret is then mandatory).
        token_ttl_s: Lifetime of tokens ``polyvox token`` prints.
        joins_per_minute: Join attempts per client address per minute (429 past it).
        ice_servers: STUN/TURN URLs given to aiortc (``stun:stun.example.org:3478``);
            empty: host candidates only (same network / loopback).
        ice_addresses: Host addresses to gather ICE candidates on; ``None``: every
            interface (plus loopback when listening on loopback).
        foreign_gain: Gain of a speaker's own voice for listeners of another language.
        duck_gain: Gain of direct speech while an interpretation plays.
        connect_timeout_s: A participant whose connection has not come up this long after
            joining is released (a half-open join holds no place for good).
        idle_timeout_s: A connected participant whose audio stopped arriving this long
            ago is released.
        telephony: Accept phone callers over Twilio Media Streams at
            ``/telephony/twilio`` (they join rooms like any participant; tokens apply).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_participants: int = Field(8, ge=1, le=64)
    max_rooms: int = Field(32, ge=1)
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)
    require_token: bool | None = None
    token_ttl_s: int = Field(24 * 3600, ge=60)
    joins_per_minute: int = Field(30, ge=1)
    ice_servers: list[str] = Field(default_factory=list)
    ice_addresses: list[str] | None = None
    foreign_gain: float = Field(0.3, ge=0.0, le=1.0)
    duck_gain: float = Field(0.15, ge=0.0, le=1.0)
    telephony: bool = True
    connect_timeout_s: float = Field(15.0, gt=0.0, le=120.0)
    idle_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        cleaned = []
        for origin in value:
            text = origin.strip().rstrip("/").lower()
            if not _ORIGIN.match(text):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme and host (and port) only, "
                    "e.g. https://example.org or http://localhost:3000"
                )
            cleaned.append(text)
        return cleaned

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_are_hosts(cls, value: list[str]) -> list[str]:
        return [parse_host_entry(entry) for entry in value]
