"""Room tokens: HMAC-SHA256 signed, expiring, valid for one room, optionally for one user.

Two formats, both ``.``-separated base64url/ASCII:

* ``<expiry>.<signature>``: anyone holding it may join the room until ``expiry`` (Unix
  seconds); the signature covers the room name and the expiry. Tokens printed before
  user identities existed have this form and stay valid.
* ``<expiry>.<user>.<signature>``: the same, for one user; ``user`` is the user's name,
  UTF-8, base64url without padding, and the signature covers room, expiry and user, so
  none of them can be changed without the secret.

A token for one room does not open another and cannot be extended. The secret comes
from the environment (``POLYVOX_ROOM_SECRET``), never from configuration files, and
neither secret nor token is ever logged.

:func:`verify_token` and :func:`check_token` never raise, whatever they are given
(``None``, non-ASCII, 5,000 digits, a megabyte of text): a client's token is untrusted
input, and a bad one is a reason to refuse it, not a server fault.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
import unicodedata
from dataclasses import dataclass

from pipeline.errors import ConfigError

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MAX_USER_LENGTH",
    "SECRET_ENV",
    "TokenCheck",
    "check_token",
    "make_token",
    "room_secret",
    "verify_token",
]

#: The environment variable that holds the signing secret.
SECRET_ENV = "POLYVOX_ROOM_SECRET"
#: Shortest secret accepted: a short one could be guessed offline from one token.
MIN_SECRET_LENGTH = 16
#: Longest user identity a token may carry, in characters.
MAX_USER_LENGTH = 64
#: Longest token looked at; the longest valid one (64 four-byte characters) is ~400.
MAX_TOKEN_LENGTH = 1024

# Expiry: plain ASCII digits (``str.isdigit`` would take "²"), at most 12 of them (year
# 33658), so ``int()`` is cheap and never refuses.
_EXPIRY = re.compile(r"\A[0-9]{1,12}\Z")
_B64URL = re.compile(r"\A[A-Za-z0-9_-]+\Z")
# An HMAC-SHA256 digest (32 bytes) in unpadded base64url.
_SIGNATURE_LENGTH = 43

_MALFORMED = "malformed token"
_WRONG = "token is not valid for this room"
_EXPIRED = "token has expired"


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


@dataclass(frozen=True)
class TokenCheck:
    """What :func:`check_token` found.

    Attributes:
        reason: ``None`` when the token is valid, else a short reason that is safe to
            show the client (it never contains the secret or the expected signature).
        user: The user the token was made for, when valid and made for one.
        expires: The token's expiry (Unix seconds), when valid.
    """

    reason: str | None
    user: str | None = None
    expires: int | None = None

    @property
    def valid(self) -> bool:
        """Whether the token lets its holder in."""
        return self.reason is None


def _encode(text: str) -> bytes:
    # "surrogatepass": a str from anywhere (a JSON body may hold lone surrogates)
    # must still encode, and must never raise.
    return text.encode("utf-8", "surrogatepass")


def _signature(secret: str, room: str, expires: int, user_field: str | None) -> str:
    if user_field is None:
        # The original format; kept byte for byte so issued tokens stay valid.
        message = _encode(f"{room}\n{expires}")
    else:
        # JSON makes the fields unambiguous whatever the room holds, and a JSON array
        # ends in "]" where an old-format message ends in a digit: no message of one
        # format is also a message of the other.
        message = _encode(json.dumps(["polyvox-token-v2", room, expires, user_field]))
    digest = hmac.new(_encode(secret), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _check_user(user: str) -> str:
    """``user`` if it may be carried in a token, else ``ValueError``."""
    if not isinstance(user, str) or not user:
        raise ValueError("a token's user must be a non-empty string")
    if len(user) > MAX_USER_LENGTH:
        raise ValueError(f"a token's user must be at most {MAX_USER_LENGTH} characters")
    if any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in user) or user != user.strip():
        raise ValueError("a token's user must be printable, without control characters or edge spaces")
    return user


def make_token(
    room: str,
    secret: str,
    ttl_s: float = 24 * 3600,
    *,
    user: str | None = None,
    now: float | None = None,
) -> str:
    """A token that lets its holder join ``room`` for ``ttl_s`` seconds.

    Args:
        room: The room name.
        secret: The signing secret (see :func:`room_secret`).
        ttl_s: Validity in seconds from ``now``.
        user: The user the token is for (at most 64 printable characters), carried in
            the token and covered by its signature; ``None``: anyone holding it.
        now: Unix time to count from (default: now).

    Raises:
        ValueError: ``user`` is empty, too long or has control characters.
    """
    expires = int((time.time() if now is None else now) + ttl_s)
    if user is None:
        return f"{expires}.{_signature(secret, room, expires, None)}"
    user_field = base64.urlsafe_b64encode(_check_user(user).encode("utf-8")).rstrip(b"=").decode()
    return f"{expires}.{user_field}.{_signature(secret, room, expires, user_field)}"


def _decode_user(field: str) -> str | None:
    """The user in a token's middle field, or ``None`` when it is not a valid one."""
    if not _B64URL.match(field) or len(field) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(field + "=" * (-len(field) % 4))
        user = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    # Only the canonical encoding: one user, one spelling of its token.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != field:
        return None
    try:
        return _check_user(user)
    except ValueError:
        return None


def check_token(token: object, room: object, secret: str, *, now: float | None = None) -> TokenCheck:
    """Check a token for ``room``; never raises.

    Args:
        token: What the client sent (anything: only a well-formed string can pass).
        room: The room being entered.
        secret: The signing secret.
        now: Unix time to check the expiry against (default: now).

    Returns:
        A :class:`TokenCheck`: valid (with the token's user, if any), or the reason not.
    """
    if not isinstance(token, str) or not isinstance(room, str) or not secret:
        return TokenCheck(_MALFORMED)
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return TokenCheck(_MALFORMED)
    parts = token.split(".")
    if len(parts) == 2:
        expires_text, signature = parts
        user_field: str | None = None
        user = None
    elif len(parts) == 3:
        expires_text, user_field, signature = parts
        user = _decode_user(user_field)
        if user is None:
            return TokenCheck(_MALFORMED)
    else:
        return TokenCheck(_MALFORMED)
    if not _EXPIRY.match(expires_text) or len(signature) != _SIGNATURE_LENGTH or not _B64URL.match(signature):
        return TokenCheck(_MALFORMED)
    expires = int(expires_text)
    # Both ASCII strings of the same length: compare_digest neither raises nor leaks.
    if not hmac.compare_digest(signature, _signature(secret, room, expires, user_field)):
        return TokenCheck(_WRONG)
    if expires < (time.time() if now is None else now):
        return TokenCheck(_EXPIRED)
    return TokenCheck(None, user=user, expires=expires)


def verify_token(token: object, room: object, secret: str, *, now: float | None = None) -> str | None:
    """Check a token for ``room``; never raises.

    Returns:
        ``None`` when valid, else a short reason (safe to show the client: it never
        contains the secret or the expected signature). :func:`check_token` also
        returns the token's user.
    """
    return check_token(token, room, secret, now=now).reason
