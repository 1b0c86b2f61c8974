"""HTTP defences of the room server: allowed hosts, CORS and JSON errors.

Three aiohttp middlewares, used in this order (outermost first; see
:func:`security_middlewares`):

1. :func:`allowed_hosts_middleware`: the ``Host`` header must name this server. A
   page on another site whose name is made to resolve to 127.0.0.1 (DNS rebinding)
   reaches a loopback server with its own name in ``Host``; such requests get 421.
   Loopback names and addresses (``localhost``, ``127.0.0.1``, ``[::1]``, any port)
   are always allowed, other names only when configured (``webrtc.allowed_hosts``).
2. :func:`cors_middleware`: browsers' cross-origin rules. A request with an
   ``Origin`` is let through only from the server's own origin or from one of
   ``webrtc.allowed_origins``; "own" is decided from the origin's host name against
   the allowed hosts, never from the ``Host`` header alone, which a rebinding page
   controls. Preflight ``OPTIONS`` requests from allowed origins are answered (204)
   and their responses carry ``Access-Control-Allow-Origin``.
3. :func:`json_errors_middleware`: every error is ``{"error": "..."}``. A
   :class:`~transports.webrtc.validation.ClientInputError` keeps its 4xx status, an
   aiohttp ``HTTPException`` its own; anything else is a fault of the server: logged
   with its traceback and answered 500 ``{"error": "internal error"}``, with no
   details for the client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from loguru import logger

from transports.webrtc.hosts import HostRules, origin_allowed
from transports.webrtc.settings import WebRTCSettings
from transports.webrtc.validation import MAX_BODY_BYTES, ClientInputError, decode_json_object

__all__ = [
    "ALLOWED_HEADERS",
    "ALLOWED_METHODS",
    "HostRules",
    "allowed_hosts_middleware",
    "cors_middleware",
    "json_errors_middleware",
    "origin_allowed",
    "read_json_object",
    "security_middlewares",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

#: Methods the API answers cross-origin.
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
#: Request headers a cross-origin page may send.
ALLOWED_HEADERS = "Content-Type, Authorization, X-Participant-Key"
#: How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE_S = 600

def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def allowed_hosts_middleware(rules: HostRules, *, status: int = 421) -> Middleware:
    """Refuse requests whose ``Host`` is not one this server answers to (DNS rebinding).

    Args:
        rules: The allowed hosts.
        status: The answer to other hosts: 421 Misdirected Request (default) or 403.
    """

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is None:
            return _error(400, "the request has no Host header")
        if not rules.allows_header(host):
            return _error(status, "this server does not answer to that host name")
        return await handler(request)

    return check_host


def cors_middleware(allowed_origins: Iterable[str], rules: HostRules) -> Middleware:
    """Answer preflights and refuse other origins than the server's own and the allowed ones.

    Requests without ``Origin`` (non-browser clients, same-origin navigation) pass:
    their token decides. A request whose ``Origin`` is not allowed gets 403 and no
    CORS headers; one from a configured origin gets ``Access-Control-Allow-Origin``
    (and ``Vary: Origin``) on whatever the handler answers, errors included.
    """
    configured = tuple(allowed_origins)
    listed = {o.strip().lower().rstrip("/") for o in configured}

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        if not origin_allowed(origin, request.headers.get("Host"), configured, rules):
            return _error(403, "origin not allowed")
        cross = origin.strip().lower().rstrip("/") in listed
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if cross else {}
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
                    "Vary": "Origin",
                },
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # Without the header a page cannot read why it was refused.
            exc.headers.update(headers)
            raise
        response.headers.update(headers)
        return response

    return cors


@web.middleware
async def json_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON: client mistakes keep their 4xx, real faults are a logged 500."""
    try:
        return await handler(request)
    except ClientInputError as exc:
        return _error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and other non-errors are answers, not failures
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return _error(exc.status, exc.reason, headers)
    except ConnectionResetError:
        raise  # the client went away: nothing to answer, nothing wrong here
    except Exception:
        logger.exception(f"{request.method} {request.path[:200]!r} failed")
        return _error(500, "internal error")


async def read_json_object(request: web.Request, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, object]:
    """The request's body as one JSON object, or a :class:`ClientInputError`.

    Raises:
        ClientInputError: 413 past ``max_bytes`` (aiohttp's own ``client_max_size``
            gives ``HTTPRequestEntityTooLarge``, also a 413); 400 when not UTF-8 JSON,
            nested too deeply or not an object.
    """
    return decode_json_object(await request.read(), max_bytes=max_bytes)


def security_middlewares(settings: WebRTCSettings, *, bind_host: str | None = None) -> list[Middleware]:
    """The middlewares of the room server, outermost first.

    Args:
        settings: ``allowed_hosts`` and ``allowed_origins`` are read from it.
        bind_host: ``server.host``; a specific address is an allowed host too.

    Returns:
        ``[allowed hosts, CORS, JSON errors]``, for ``web.Application(middlewares=...)``.
    """
    rules = HostRules.for_server(settings.allowed_hosts, bind_host)
    return [
        allowed_hosts_middleware(rules),
        cors_middleware(settings.allowed_origins, rules),
        json_errors_middleware,
    ]
