"""What ``polyvox serve`` checks before it loads any model, so that a setup that cannot
work fails in milliseconds with one line instead of after the engines loaded.

The configuration itself is checked by :func:`bot.config.load_settings`, engine names by
:func:`bot.app.check_engines`, room security by
:func:`transports.webrtc.check_security`; this module adds the listening address and
the models (:func:`pipeline.models.check_models`).
"""

from __future__ import annotations

import errno
import os
import socket

from loguru import logger

from pipeline.errors import ConfigError

__all__ = ["check_models_present", "check_port"]


def check_port(host: str, port: int) -> None:
    """Whether ``polyvox serve`` can listen on ``host:port`` (binds once, then lets go).

    Binds like the server will (with ``SO_REUSEADDR``, so a port that only has
    connections in TIME_WAIT is fine, as it is for the server).

    Raises:
        ConfigError: the port is taken, not allowed, or the host is not this machine's.
    """
    if port == 0:
        return  # any free port
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigError(f"server.host {host!r}: unknown host name") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            if os.name != "nt":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ConfigError(_bind_problem(host, port, exc)) from None


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"server.port {port}: {where} is already in use (another polyvox serve?); "
            f"stop that program or pick another port: --set server.port={port + 1 if port < 65535 else 8080}"
        )
    if exc.errno == errno.EACCES:
        return f"server.port {port}: not allowed to listen on {where} (ports below 1024 need root); use e.g. --set server.port=8080"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"server.host {host}: not an address of this machine (use 127.0.0.1, or 0.0.0.0 for every interface)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def check_models_present(settings) -> None:  # type: ignore[no-untyped-def]
    """Every configured model is on this machine, or can be downloaded now.

    Raises:
        ModelMissingError: one that is neither (the message names it and the pull command).
        ImportError: hub models without ``huggingface_hub``.
    """
    from bot.config import OPTIONAL_ENGINE_KINDS
    from pipeline.models import check_models

    for status in check_models(settings, optional=OPTIONAL_ENGINE_KINDS):
        if status.fetchable:
            logger.info(f"{status.problem}: downloading it now")
        else:  # its feature is off; load_engines leaves the engine out
            logger.warning(f"{status.problem}; that feature is off")
