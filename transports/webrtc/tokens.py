"""Room tokens: HMAC-SHA256 signed, expiring, valid for one room only.

A token is ``<expiry unix seconds>.<base64url signature>``; the signature covers the
room name and the expiry, so a token for one room does not open another and cannot be
extended. The secret comes from the environment (``POLYVOX_ROOM_SECRET``), never from
configuration files, and neither secret nor token is ever logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

from pipeline.errors import ConfigError

__all__ = ["SECRET_ENV", "make_token", "room_secret", "verify_token"]

#: The environment variable that holds the signing secret.
SECRET_ENV = "POLYVOX_ROOM_SECRET"
#: Shortest secret accepted: a short one could be guessed offline from one token.
MIN_SECRET_LENGTH = 16


def room_secret(environ: dict[str, str] | None = None) -> str | None:
    """The signing secret from the environment, or ``None`` when unset.

    Raises:
        ConfigError: the secret is set but too short to be safe.
    """
    value = (environ if environ is not None else os.environ).get(SECRET_ENV, "")
    if not value:
        return None
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{SECRET_ENV} must be at least {MIN_SECRET_LENGTH} characters long")
    return value


def _signature(secret: str, room: str, expires: int) -> str:
    digest = hmac.new(secret.encode(), f"{room}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(room: str, secret: str, *, ttl_s: float = 24 * 3600, now: float | None = None) -> str:
    """A token that lets its holder join ``room`` for ``ttl_s`` seconds.

    Args:
        room: The room name.
        secret: The signing secret (see :func:`room_secret`).
        ttl_s: Validity in seconds from ``now``.
        now: Unix time to count from (default: now).
    """
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"{expires}.{_signature(secret, room, expires)}"


def verify_token(token: str, room: str, secret: str, *, now: float | None = None) -> str | None:
    """Check a token for ``room``.

    Returns:
        ``None`` when valid, else a short reason (safe to show the client: it never
        contains the secret or the expected signature).
    """
    expires_text, dot, signature = (token or "").partition(".")
    if not dot or not expires_text.isdigit() or not signature:
        return "malformed token"
    expires = int(expires_text)
    if not hmac.compare_digest(signature, _signature(secret, room, expires)):
        return "token is not valid for this room"
    if expires < (time.time() if now is None else now):
        return "token has expired"
    return None
