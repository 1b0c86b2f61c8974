"""Everything a client sends the room server, checked in one place.

Every check here either returns a clean, typed value or raises
:class:`ClientInputError` with the 4xx status and the one-line message the client
should get. Nothing here raises anything else for any input (wrong types, non-ASCII,
megabytes of text, deeply nested JSON): a client's mistake is never a server fault.
Messages echo a client's value only once it has passed its pattern (a short
language code), so a hostile value can neither flood a log line nor split it.

The HTTP layer (``http_security.json_errors_middleware``) turns a
:class:`ClientInputError` into ``{"error": message}`` with its status.
"""

from __future__ import annotations

import hmac
import json
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PolyvoxError
from transports.webrtc.tokens import MAX_TOKEN_LENGTH, check_token

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DISPLAY_NAME_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_SDP_LENGTH",
    "ClientInputError",
    "JoinRequest",
    "bearer_token",
    "check_room_token",
    "decode_json_object",
    "keys_match",
    "parse_join_body",
    "validate_display_name",
    "validate_language",
    "validate_participant_id",
    "validate_participant_key",
    "validate_room_name",
    "validate_sdp_offer",
    "validate_token_field",
]

#: Room names: letters, digits, "-" and "_". ``\A``/``\Z``, not ``^``/``$``: ``$``
#: also matches before a trailing newline, which would then split log lines.
ROOM_NAME = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
#: Participant ids (the server issues 32 hex digits; any such short word is well formed).
PARTICIPANT_ID = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
#: Language tags: "en", "es", "pt-BR", "zh_Hant" (ISO 639 plus subtags).
LANGUAGE_TAG = re.compile(r"\A[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,3}\Z")

#: Longest participant key looked at (the server issues 32 characters).
MAX_KEY_LENGTH = 128
#: Longest display name, in characters.
MAX_DISPLAY_NAME_LENGTH = 64
#: Longest language field.
MAX_LANGUAGE_LENGTH = 35
#: Longest SDP offer (a browser's is 2-6 KB; aiohttp caps the whole body anyway).
MAX_SDP_LENGTH = 128 * 1024
#: Largest JSON body the join endpoint reads (``client_max_size`` of the app).
MAX_BODY_BYTES = 256 * 1024
#: Deepest JSON nesting accepted; json.loads would overflow the stack around 1,000+.
MAX_JSON_DEPTH = 32


class ClientInputError(PolyvoxError):
    """A request the server refuses because of what the client sent.

    Args:
        status: The HTTP status to answer with (400-499).
        message: One line for the client; it never contains secrets.

    Raises:
        ValueError: ``status`` is not a 4xx status.
    """

    retryable = False

    def __init__(self, status: int, message: str) -> None:
        if not 400 <= status <= 499:
            raise ValueError(f"ClientInputError needs a 4xx status, got {status}")
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------ identifiers


def validate_room_name(value: object) -> str:
    """A room name from a URL or body.

    Raises:
        ClientInputError: 400 unless 1-64 ASCII letters, digits, "-" or "_".
    """
    if not isinstance(value, str) or not ROOM_NAME.match(value):
        raise ClientInputError(400, "room names are 1-64 letters, digits, '-' or '_'")
    return value


def validate_participant_id(value: object) -> str:
    """A participant id from a URL.

    Raises:
        ClientInputError: 404 (no participant can have such an id) unless 1-64 ASCII
            letters, digits, "-" or "_".
    """
    if not isinstance(value, str) or not PARTICIPANT_ID.match(value):
        raise ClientInputError(404, "no such participant in this room")
    return value


def validate_participant_key(value: object) -> str:
    """A participant key from the ``X-Participant-Key`` header or ``?key=``.

    Raises:
        ClientInputError: 403 when missing, not ASCII or longer than 128 characters.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH or not value.isascii():
        raise ClientInputError(403, "leaving needs the participant's key from the join answer")
    return value


def keys_match(given: object, expected: str | None) -> bool:
    """Whether a client's key equals the expected one; constant time, never raises.

    Any input is accepted: non-strings, non-ASCII (where ``hmac.compare_digest`` on
    ``str`` would raise ``TypeError``) and huge values (refused by length first,
    which leaks only that they are too long) are simply not a match.
    """
    if not isinstance(given, str) or not isinstance(expected, str) or not expected:
        return False
    if len(given) > MAX_KEY_LENGTH:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


# ------------------------------------------------------------------ fields


def validate_display_name(value: object, *, default: str = "guest") -> str:
    """A participant's display name: text of at most 64 characters, cleaned for logs.

    Control and format characters (newlines, bidi overrides, zero-width joiners) are
    dropped and runs of whitespace become one space; an empty result is ``default``.

    Raises:
        ClientInputError: 400 when not text or longer than 64 characters.
    """
    if value is None or value == "":
        return default
    if not isinstance(value, str) or len(value) > MAX_DISPLAY_NAME_LENGTH:
        raise ClientInputError(400, f"'name' must be text of at most {MAX_DISPLAY_NAME_LENGTH} characters")
    kept = "".join(
        " " if ch.isspace() else ch for ch in value if unicodedata.category(ch)[0] != "C" or ch.isspace()
    )
    return " ".join(kept.split()) or default


def validate_language(
    value: object, field: str, allowed: Collection[str], *, default: str | None = None, unavailable: str | None = None
) -> str:
    """A language field (``speaks``, ``hears``) that must be one of ``allowed``.

    Args:
        value: What the client sent.
        field: The field's name, for the message.
        allowed: The languages accepted (ISO 639-1 codes).
        default: Used when the field is missing, null or empty.
        unavailable: What to say of a language not in ``allowed`` ("cannot recognise
            speech in {value!r}"); default: "{value!r} is not available".

    Raises:
        ClientInputError: 400 when not a short language tag or not in ``allowed``.
    """
    if (value is None or value == "") and default is not None:
        value = default
    choices = ", ".join(sorted(allowed)) or "none"
    if not isinstance(value, str) or len(value) > MAX_LANGUAGE_LENGTH or not LANGUAGE_TAG.match(value):
        raise ClientInputError(400, f"'{field}' must be a language code (choose from: {choices})")
    if value not in allowed:
        why = (unavailable or "{value!r} is not available").format(value=value)
        raise ClientInputError(400, f"'{field}': {why} (choose from: {choices})")
    return value


def validate_sdp_offer(sdp: object, kind: object) -> str:
    """The SDP of a join body: an offer with an audio section.

    Raises:
        ClientInputError: 400 when ``kind`` is not "offer", or ``sdp`` is not text
            with an audio section, or is too long.
    """
    if kind != "offer":
        raise ClientInputError(400, "'type' must be 'offer'")
    if not isinstance(sdp, str) or len(sdp) > MAX_SDP_LENGTH or "m=audio" not in sdp:
        raise ClientInputError(400, "'sdp' must be an SDP offer with an audio track")
    if "\x00" in sdp:
        raise ClientInputError(400, "'sdp' must not contain NUL characters")
    return sdp


def validate_token_field(value: object) -> str | None:
    """A token from a body, query or header: ``None`` when absent.

    Raises:
        ClientInputError: 400 when present but not short ASCII text.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_TOKEN_LENGTH or not value.isascii():
        raise ClientInputError(400, "'token' must be the text `polyvox token ROOM` printed")
    return value


def bearer_token(header: object) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if not isinstance(header, str) or not header.startswith("Bearer "):
        return None
    return header[7:].strip() or None


def check_room_token(token: object, room: str, secret: str | None, *, required: bool) -> str | None:
    """Let a client into ``room`` by its token, or refuse.

    Args:
        token: The client's token (body, ``?token=`` or bearer), or ``None``.
        room: The (validated) room name.
        secret: The signing secret; needed when ``required``.
        required: Whether this server needs tokens.

    Returns:
        The user the token was made for, when it names one; else ``None``.

    Raises:
        ClientInputError: 401 when a required token is missing; 400 when it is not
            text; 403 when invalid, for another room, or expired.
    """
    if not required:
        return None
    value = validate_token_field(token)
    if value is None:
        raise ClientInputError(401, "this server needs a room token (polyvox token ROOM)")
    if not secret:
        # A server that requires tokens without a secret is refused at start-up;
        # should one get here anyway, nobody gets in.
        raise ClientInputError(403, "this server cannot check tokens")
    result = check_token(value, room, secret)
    if not result.valid:
        raise ClientInputError(403, result.reason or "invalid token")
    return result.user


# ------------------------------------------------------------------ bodies


def _depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text (outside strings)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def decode_json_object(raw: bytes | bytearray | str, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Parse a request body that must be one JSON object.

    Raises:
        ClientInputError: 413 when larger than ``max_bytes``; 400 when not UTF-8,
            not JSON, nested deeper than 32 levels, or not an object.
    """
    if len(raw) > max_bytes:
        raise ClientInputError(413, f"the body is larger than {max_bytes // 1024} KiB")
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ClientInputError(400, "the body must be JSON (UTF-8)") from None
    else:
        text = raw
    # json.loads recurses per level: a body of 100,000 "[" is a RecursionError, which
    # must be a 400, not a crash; refusing deep bodies first also bounds the work.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(text) > MAX_JSON_DEPTH:
        raise ClientInputError(400, "the body is nested too deeply")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and integers beyond Python's digit limit.
        raise ClientInputError(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise ClientInputError(400, "the body must be a JSON object")
    return body


@dataclass(frozen=True)
class JoinRequest:
    """A validated ``POST /api/rooms/{room}/join`` body.

    Attributes:
        sdp: The SDP offer (has an audio section).
        name: Display name, cleaned (never empty).
        speaks: Language the participant speaks (one the server can recognise).
        hears: Language they want to hear (one the server can interpret into).
        token: The body's ``token`` when it is text, else ``None``. Check tokens with
            :func:`check_room_token` *before* parsing the rest, so a client without a
            valid token learns nothing about what else was wrong.
    """

    sdp: str
    name: str
    speaks: str
    hears: str
    token: str | None


def parse_join_body(
    body: object,
    *,
    speakable: Collection[str],
    hearable: Collection[str],
    default_language: str,
) -> JoinRequest:
    """Validate a join body (already parsed JSON, or raw bytes/str).

    Args:
        body: The parsed JSON (a dict), or the raw body to parse.
        speakable: Languages the ASR can recognise.
        hearable: Languages a participant may listen in.
        default_language: ``speaks`` when the client gives none.

    Returns:
        The typed request.

    Raises:
        ClientInputError: 400 (413 for a huge raw body) naming the first bad field.
    """
    if isinstance(body, bytes | bytearray | str):
        body = decode_json_object(body)
    if not isinstance(body, dict):
        raise ClientInputError(400, "the body must be a JSON object")
    token = body.get("token")
    sdp = validate_sdp_offer(body.get("sdp"), body.get("type"))
    speaks = validate_language(body.get("speaks"), "speaks", speakable, default=default_language)
    hears = validate_language(body.get("hears"), "hears", hearable, default=speaks)
    name = validate_display_name(body.get("name"))
    return JoinRequest(
        sdp=sdp, name=name, speaks=speaks, hears=hears, token=token if isinstance(token, str) and token else None
    )
