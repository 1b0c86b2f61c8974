"""Which local addresses aiortc offers as ICE host candidates.

aioice leaves out ``127.0.0.1`` when it gathers host candidates, so a server and a
browser on one machine with no other usable interface (a container, CI, a laptop
offline) could never connect. :func:`set_host_addresses` replaces aioice's address
lookup, process-wide, with one that can add loopback or pin an explicit list.
"""

from __future__ import annotations

import aioice.ice

__all__ = ["set_host_addresses"]

_original = aioice.ice.get_host_addresses


def set_host_addresses(addresses: list[str] | None = None, *, include_loopback: bool = False) -> None:
    """Choose the host candidates every later peer connection gathers.

    Args:
        addresses: Exactly these IPv4/IPv6 addresses (e.g. ``["127.0.0.1"]`` in tests),
            or ``None`` for every interface as aioice finds them.
        include_loopback: With ``addresses=None``, add ``127.0.0.1`` to them.
    """
    if addresses is None and not include_loopback:
        aioice.ice.get_host_addresses = _original
        return

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if addresses is not None:
            return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        found = _original(use_ipv4, use_ipv6)
        return ["127.0.0.1", *found] if use_ipv4 else found

    aioice.ice.get_host_addresses = host_addresses
