"""Host names and origins: which ones a server answers to (no aiohttp needed).

:class:`HostRules` decides which ``Host`` headers are this server's (DNS rebinding
defence) and :func:`origin_allowed` which browser origins may call it. The settings
validate ``webrtc.allowed_hosts`` entries with :func:`parse_host_entry`; the aiohttp
middlewares in :mod:`transports.webrtc.http_security` apply the rules.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HostRules", "origin_allowed", "parse_host_entry", "split_host"]

_NAME = re.compile(r"\A[a-z0-9](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_-]{1,63})*\Z")
_PORT = re.compile(r"\A[0-9]{1,5}\Z")
_ORIGIN = re.compile(r"\A(https?)://([^/?#@\s\\]{1,300})\Z")


def split_host(value: object) -> tuple[str, int | None] | None:
    """A ``Host`` header (or an origin's authority) as ``(host, port)``; ``None`` if invalid.

    The host is lowercased, without a trailing dot, and without brackets for IPv6
    (``"[::1]:8080"`` → ``("::1", 8080)``).
    """
    if not isinstance(value, str) or not value or len(value) > 300 or not value.isascii():
        return None
    text = value.strip().lower()
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
        try:
            if ipaddress.ip_address(host).version != 6:
                return None
        except ValueError:
            return None
    else:
        host, colon, port_part = text.partition(":")
        if colon:
            port_text = port_part
        host = host[:-1] if host.endswith(".") else host
        if not _NAME.match(host):
            return None
    port: int | None = None
    if port_text is not None:
        if not _PORT.match(port_text) or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    return host, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostRules:
    """Which ``Host`` names this server answers to.

    Loopback names and addresses are always allowed. Each configured entry is one of:
    a name or address (``rooms.example.org``, ``192.0.2.7``, ``[2001:db8::1]``), any
    port; the same with a port (``rooms.example.org:8443``), that port only; a name
    with a leading dot (``.example.org``), that name and every name under it; or
    ``*``, any host (for a reverse proxy that checks hosts itself).

    Raises:
        ValueError: an entry is none of these.
    """

    entries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parsed = tuple(_parse_entry(entry.strip()) for entry in self.entries)
        object.__setattr__(self, "_parsed", parsed)

    @classmethod
    def for_server(cls, allowed_hosts: Iterable[str], bind_host: str | None = None) -> HostRules:
        """The rules for a server listening on ``bind_host``.

        A specific bind address (not a wildcard such as ``0.0.0.0``) is added: clients
        that reach the server by that address are not rebinding anything.
        """
        entries = list(allowed_hosts)
        if bind_host and bind_host not in ("0.0.0.0", "::", "") and split_host(_bracket(bind_host)):
            entries.append(_bracket(bind_host))
        return cls(tuple(entries))

    def allows(self, host: str, port: int | None) -> bool:
        """Whether ``host`` (as :func:`split_host` returns it) on ``port`` is allowed."""
        if is_loopback(host):
            return True
        parsed: tuple[tuple[str, str, int | None], ...] = getattr(self, "_parsed")  # noqa: B009
        for kind, name, entry_port in parsed:
            if kind == "any":
                return True
            if entry_port is not None and entry_port != port:
                continue
            if kind == "exact" and host == name:
                return True
            if kind == "suffix" and (host == name or host.endswith("." + name)):
                return True
        return False

    def allows_header(self, value: object) -> bool:
        """Whether a raw ``Host`` header value is allowed (invalid ones never are)."""
        parsed = split_host(value)
        return parsed is not None and self.allows(*parsed)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _parse_entry(entry: str) -> tuple[str, str, int | None]:
    """``(kind, host, port)`` of one ``allowed_hosts`` entry; kind: exact, suffix, any."""
    if entry == "*":
        return "any", "", None
    suffix = entry.startswith(".")
    parsed = split_host(entry[1:] if suffix else entry)
    if parsed is None:
        raise ValueError(
            f"{entry!r} is not a host name, address, host:port, .domain or '*' "
            "(no scheme or path: rooms.example.org, not https://rooms.example.org/)"
        )
    return ("suffix" if suffix else "exact"), parsed[0], parsed[1]


def parse_host_entry(entry: object) -> str:
    """One ``allowed_hosts`` entry, normalised (lowercase, no trailing dot).

    Raises:
        ValueError: not a host name, address, ``host:port``, ``.domain`` or ``*``.
    """
    if not isinstance(entry, str):
        raise ValueError(f"allowed host entries are strings, not {type(entry).__name__}")
    kind, host, port = _parse_entry(entry.strip())
    if kind == "any":
        return "*"
    text = _bracket(host) + (f":{port}" if port is not None else "")
    return "." + text if kind == "suffix" else text


def _origin_authority(origin: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of an ``Origin`` value; the scheme's default port is None."""
    match = _ORIGIN.match(origin)
    if match is None:
        return None
    scheme = match[1]
    parsed = split_host(match[2])
    if parsed is None:
        return None
    host, port = parsed
    if port == {"http": 80, "https": 443}[scheme]:
        port = None
    return scheme, host, port


def origin_allowed(
    origin: str, host_header: object, allowed_origins: Iterable[str], rules: HostRules
) -> bool:
    """Whether a browser page at ``origin`` may call this server.

    Allowed: an origin listed in ``allowed_origins`` (exact, case-insensitive), or
    the server's own origin: the origin's host is one this server answers to
    (``rules``) *and* it is the host the request was sent to. Equality with the
    ``Host`` header alone is not enough: under DNS rebinding both say the attacker's
    name. The scheme is not compared with the server's (behind a TLS proxy the
    server speaks plain HTTP to pages served over HTTPS).
    """
    normalized = origin.strip().lower().rstrip("/") if origin.isascii() else origin
    if normalized in {o.strip().lower().rstrip("/") for o in allowed_origins}:
        return True
    authority = _origin_authority(normalized)
    target = split_host(host_header)
    if authority is None or target is None:
        return False
    _, host, port = authority
    target_host, target_port = target
    if target_port in (80, 443):
        target_port = None
    return rules.allows(host, port) and (host, port) == (target_host, target_port)


