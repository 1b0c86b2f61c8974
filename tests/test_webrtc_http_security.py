"""HTTP defences: allowed hosts (DNS rebinding), CORS, and JSON errors that are never a
500 for a client's mistake; checked on a small aiohttp app shaped like the room API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transports.webrtc.hosts import HostRules, origin_allowed, split_host
from transports.webrtc.http_security import (
    ALLOWED_HEADERS,
    allowed_hosts_middleware,
    cors_middleware,
    json_errors_middleware,
    read_json_object,
    security_middlewares,
)
from transports.webrtc.settings import WebRTCSettings
from transports.webrtc.tokens import make_token
from transports.webrtc.validation import (
    MAX_BODY_BYTES,
    ClientInputError,
    bearer_token,
    check_room_token,
    keys_match,
    parse_join_body,
    validate_participant_id,
    validate_participant_key,
    validate_room_name,
)

SECRET = "correct horse battery staple"
PID = "0123456789abcdef0123456789abcdef"
KEY = "Zm9vYmFyYmF6cXV4cXV1eHF1dXg0MjQy"
ALLOWED_ORIGIN = "https://app.example.org"
SDP = "v=0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def api_app(settings: WebRTCSettings, *, require_token: bool = True, bind_host: str = "127.0.0.1") -> web.Application:
    """The room API's shape, with the validation layer where the real handlers use it."""
    app = web.Application(middlewares=security_middlewares(settings, bind_host=bind_host), client_max_size=MAX_BODY_BYTES)

    def token_of(request: web.Request, body_token: object = None) -> object:
        return body_token or request.query.get("token") or bearer_token(request.headers.get("Authorization"))

    async def join(request: web.Request) -> web.Response:
        room = validate_room_name(request.match_info["room"])
        body = await read_json_object(request)
        user = check_room_token(token_of(request, body.get("token")), room, SECRET, required=require_token)
        joined = parse_join_body(body, speakable=["en", "es"], hearable=["en", "es"], default_language="en")
        return web.json_response({"room": room, "name": joined.name, "user": user, "participant_id": PID, "key": KEY})

    async def room_info(request: web.Request) -> web.Response:
        room = validate_room_name(request.match_info["room"])
        check_room_token(token_of(request), room, SECRET, required=require_token)
        return web.json_response({"room": room, "participants": []})

    async def leave(request: web.Request) -> web.Response:
        validate_room_name(request.match_info["room"])
        pid = validate_participant_id(request.match_info["participant"])
        if pid != PID:
            raise ClientInputError(404, "no such participant in this room")
        key = validate_participant_key(request.headers.get("X-Participant-Key") or request.query.get("key"))
        if not keys_match(key, KEY):
            raise ClientInputError(403, "leaving needs the participant's key from the join answer")
        return web.json_response({"left": pid})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def fault(_request: web.Request) -> web.Response:
        raise RuntimeError("a bug in the server")

    async def unavailable(_request: web.Request) -> web.Response:
        raise web.HTTPServiceUnavailable(reason="the room's pipeline did not start")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/fault", fault)
    app.router.add_get("/unavailable", unavailable)
    app.router.add_get("/api/rooms/{room}", room_info)
    app.router.add_post("/api/rooms/{room}/join", join)
    app.router.add_delete("/api/rooms/{room}/participants/{participant}", leave)
    return app


@pytest.fixture
async def client() -> TestClient:
    settings_ = WebRTCSettings(allowed_origins=[ALLOWED_ORIGIN], allowed_hosts=["rooms.example.org"])
    async with TestClient(TestServer(api_app(settings_), host="127.0.0.1")) as test_client:
        yield test_client


def _join_body(**extra: object) -> dict[str, object]:
    return {"sdp": SDP, "type": "offer", "token": make_token("lobby", SECRET), **extra}


# --------------------------------------------------------------------------- hosts


@pytest.mark.parametrize(
    "value, parsed",
    [
        ("localhost", ("localhost", None)),
        ("LocalHost.:8080", ("localhost", 8080)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::1]", ("::1", None)),
        ("rooms.example.org", ("rooms.example.org", None)),
        ("::1", None),
        ("[127.0.0.1]", None),
        ("host:99999", None),
        ("host:", None),
        ("host:8x", None),
        ("évil.com", None),
        ("a b", None),
        ("evil.com@127.0.0.1", None),
        ("", None),
        (None, None),
    ],
)
def test_host_headers_are_parsed_strictly(value, parsed):
    assert split_host(value) == parsed


def test_loopback_hosts_are_always_allowed_others_only_when_configured():
    rules = HostRules(("rooms.example.org", ".example.net", "api.example.com:8443"))
    for host in ("localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:1", "127.9.9.9:80", "[::1]:8080", "LOCALHOST."):
        assert rules.allows_header(host), host
    for host in ("rooms.example.org", "rooms.example.org:443", "example.net", "a.b.example.net:1", "api.example.com:8443"):
        assert rules.allows_header(host), host
    for host in ("evil.com", "evil.com:8080", "127.0.0.1.nip.io", "rooms.example.org.evil.com", "xexample.net",
                 "api.example.com", "api.example.com:8080", "localhost.evil.com", "0.0.0.0", "10.0.0.1", ""):
        assert not rules.allows_header(host), host
    assert HostRules(("*",)).allows_header("anything.at.all:1")
    assert HostRules.for_server([], "192.0.2.7").allows_header("192.0.2.7:8080")
    assert not HostRules.for_server([], "0.0.0.0").allows_header("0.0.0.0:8080")
    with pytest.raises(ValueError):
        HostRules(("https://rooms.example.org/",))


async def test_a_rebinding_host_gets_421_and_never_reaches_a_handler(client):
    for host in ("evil.com:8080", "attacker.example", "127.0.0.1.evil.com"):
        response = await client.get("/api/rooms/lobby", headers={"Host": host})
        assert response.status == 421
        assert await response.json() == {"error": "this server does not answer to that host name"}
    for host in ("localhost:1234", "127.0.0.1", "[::1]:80", "rooms.example.org"):
        response = await client.get("/healthz", headers={"Host": host})
        assert response.status == 200, host


async def test_the_status_for_other_hosts_can_be_403():
    app = web.Application(middlewares=[allowed_hosts_middleware(HostRules(), status=403)])
    app.router.add_get("/", lambda _r: web.json_response({}))
    async with TestClient(TestServer(app)) as test_client:
        assert (await test_client.get("/", headers={"Host": "evil.com"})).status == 403
        assert (await test_client.get("/")).status == 200


# --------------------------------------------------------------------------- origins and CORS


def test_the_own_origin_is_decided_by_the_allowed_hosts_not_by_the_host_header():
    rules = HostRules(("rooms.example.org",))
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", [], rules)
    assert origin_allowed("https://rooms.example.org", "rooms.example.org", [], rules)
    assert origin_allowed("https://rooms.example.org", "rooms.example.org:443", [], rules)  # behind a TLS proxy
    # DNS rebinding: origin and Host agree, but the name is not this server's.
    assert not origin_allowed("http://evil.com:8080", "evil.com:8080", [], rules)
    # Another loopback port is another origin.
    assert not origin_allowed("http://127.0.0.1:3000", "127.0.0.1:8080", [], rules)
    assert origin_allowed("http://127.0.0.1:3000", "127.0.0.1:8080", ["http://127.0.0.1:3000"], rules)
    for origin in ("null", "", "file://", "http://", "http://127.0.0.1:8080/path", "javascript:1", "http://évil"):
        assert not origin_allowed(origin, "127.0.0.1:8080", [], rules), origin


async def test_a_preflight_from_an_allowed_origin_is_answered_204(client):
    response = await client.options(
        "/api/rooms/lobby/join",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-participant-key",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert set(response.headers["Access-Control-Allow-Methods"].split(", ")) >= {"GET", "POST", "DELETE"}
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "authorization", "x-participant-key"} <= allowed
    assert ALLOWED_HEADERS.count(",") == 2
    assert "Origin" in response.headers["Vary"]


async def test_a_preflight_from_another_origin_is_403_without_cors_headers(client):
    response = await client.options(
        "/api/rooms/lobby/join", headers={"Origin": "https://evil.com", "Access-Control-Request-Method": "POST"}
    )
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_responses_to_an_allowed_origin_carry_its_cors_header_errors_included(client):
    ok = await client.post("/api/rooms/lobby/join", json=_join_body(name="Ann"), headers={"Origin": ALLOWED_ORIGIN})
    assert ok.status == 200 and (await ok.json())["name"] == "Ann"
    assert ok.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    refused = await client.post("/api/rooms/lobby/join", json=_join_body(speaks="fr"), headers={"Origin": ALLOWED_ORIGIN})
    assert refused.status == 400 and refused.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    missing = await client.get("/nope", headers={"Origin": ALLOWED_ORIGIN})
    assert missing.status == 404 and missing.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


async def test_the_own_origin_needs_no_cors_header_and_other_origins_get_403(client):
    own = await client.get("/healthz", headers={"Origin": str(client.make_url("")).rstrip("/")})
    assert own.status == 200 and "Access-Control-Allow-Origin" not in own.headers
    for origin in ("https://evil.com", "null", "http://127.0.0.1:1"):
        response = await client.post("/api/rooms/lobby/join", json=_join_body(), headers={"Origin": origin})
        assert response.status == 403 and await response.json() == {"error": "origin not allowed"}
        assert "Access-Control-Allow-Origin" not in response.headers
    no_origin = await client.get("/healthz")
    assert no_origin.status == 200


# --------------------------------------------------------------------------- errors


async def test_client_errors_keep_their_4xx_and_every_error_is_json(client):
    cases = [
        (lambda: client.post("/api/rooms/lobby%0A/join", json=_join_body()), 400),
        (lambda: client.post("/api/rooms/lobby/join", data=b"[" * 100_000), 400),
        (lambda: client.post("/api/rooms/lobby/join", json=_join_body(token="²." + "x" * 43)), 400),
        (lambda: client.post("/api/rooms/lobby/join", json=_join_body(token=None)), 401),
        (lambda: client.post("/api/rooms/lobby/join", json=_join_body(token="1." + "x" * 43)), 403),
        (lambda: client.post("/api/rooms/lobby/join", data=b"x" * (MAX_BODY_BYTES + 10)), 413),
        (lambda: client.get("/api/rooms/lobby", params={"token": "9" * 5000}), 400),
        (lambda: client.get("/api/rooms/lobby", params={"token": "9" * 500 + "." + "x" * 43}), 403),
        (lambda: client.get("/api/rooms/lobby", headers={"Authorization": "Bearer " + "é" * 10}), 400),
        (lambda: client.delete(f"/api/rooms/lobby/participants/{PID}", headers={"X-Participant-Key": "ключ"}), 403),
        (lambda: client.delete(f"/api/rooms/lobby/participants/{PID}", headers={"X-Participant-Key": "x" * 32}), 403),
        (lambda: client.delete("/api/rooms/lobby/participants/nobody"), 404),
        (lambda: client.get("/no/such/path"), 404),
        (lambda: client.put("/api/rooms/lobby"), 405),
    ]
    for request, status in cases:
        response = await request()
        assert response.status == status, (await response.text())[:200]
        body = await response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str)
    left = await client.delete(f"/api/rooms/lobby/participants/{PID}", headers={"X-Participant-Key": KEY})
    assert left.status == 200
    assert "GET" in (await client.put("/api/rooms/lobby")).headers["Allow"]


async def test_a_user_token_lets_its_user_in(client):
    token = make_token("lobby", SECRET, 60, user="Ann")
    response = await client.post("/api/rooms/lobby/join", json=_join_body(token=None), headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200 and (await response.json())["user"] == "Ann"


async def test_a_real_fault_is_a_logged_500_with_no_details(client):
    from loguru import logger

    logged: list[str] = []
    sink = logger.add(logged.append, level="ERROR")
    try:
        response = await client.get("/fault")
    finally:
        logger.remove(sink)
    assert response.status == 500
    assert await response.json() == {"error": "internal error"}
    assert any("a bug in the server" in line and "/fault" in line for line in logged)


async def test_http_exceptions_keep_their_status_as_json(client):
    response = await client.get("/unavailable")
    assert response.status == 503
    assert await response.json() == {"error": "the room's pipeline did not start"}


async def test_middlewares_compose_without_the_host_check():
    app = web.Application(middlewares=[cors_middleware([], HostRules()), json_errors_middleware])

    async def bad(_request: web.Request) -> web.Response:
        raise ClientInputError(409, "room lobby is full")

    app.router.add_get("/", bad)
    async with TestClient(TestServer(app)) as test_client:
        response = await test_client.get("/")
        assert response.status == 409 and await response.json() == {"error": "room lobby is full"}
        rebound = await test_client.get("/", headers={"Host": "evil.com:80", "Origin": "http://evil.com"})
        assert rebound.status == 403


# --------------------------------------------------------------------------- fuzz


METHODS = st.sampled_from(["GET", "POST", "DELETE", "OPTIONS", "PUT", "PATCH", "HEAD", "TRACE", "G3T"])
SEGMENTS = st.sampled_from(
    ["api", "rooms", "lobby", "join", "participants", PID, "healthz", "", "..", "%0A", "lobby%0a", "%C2%B2",
     "%FF", "%00", "x" * 70, "%2F", "ro%20om", "static", "metrics", "~", "lobby?token=%FF", "lobby?key=1"]
)
PATHS = st.one_of(
    st.sampled_from(["/api/rooms/lobby/join", "/api/rooms/lobby", f"/api/rooms/lobby/participants/{PID}", "/healthz"]),
    st.lists(SEGMENTS, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40).map(lambda t: "/" + t),
)
HEADER_TEXT = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=60)
TOKENS = st.one_of(
    st.just(make_token("lobby", SECRET)),
    st.just(make_token("lobby", SECRET, user="Ann")),
    st.sampled_from(["².x", "9" * 5000, "1." + "é" * 43, ".", "..", "1.2.3"]),
    HEADER_TEXT,
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Host": st.sampled_from(["127.0.0.1", "localhost:1", "evil.com", "[::1]", "", "a b", "évil", "rooms.example.org"])
        | HEADER_TEXT,
        "Origin": st.sampled_from([ALLOWED_ORIGIN, "https://evil.com", "null", "http://127.0.0.1", "http://[::1"])
        | HEADER_TEXT,
        "Authorization": TOKENS.map(lambda t: "Bearer " + t) | HEADER_TEXT,
        "X-Participant-Key": st.sampled_from([KEY, "ключ", "x" * 200]) | HEADER_TEXT,
        "Content-Type": st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=x"]),
        "Access-Control-Request-Method": st.sampled_from(["POST", "DELETE", "X"]),
        "Transfer-Encoding": st.just("chunked"),
    },
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)
BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={"sdp": st.just(SDP) | JSON_VALUES, "type": st.just("offer") | JSON_VALUES, "name": JSON_VALUES,
                  "speaks": st.sampled_from(["en", "es", "fr"]) | JSON_VALUES, "hears": JSON_VALUES,
                  "token": TOKENS | JSON_VALUES},
    ).map(lambda d: json.dumps(d).encode()),
    st.sampled_from([b"[" * 5000, b'{"a":' * 3000, b"1" * 5000, b"\xff" * 10]),
)
REQUESTS = st.tuples(METHODS, PATHS, HEADERS, BODIES)


def _raw_request(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    headers = dict(headers)
    headers.setdefault("Host", "127.0.0.1")
    headers["Connection"] = "close"
    chunked = headers.get("Transfer-Encoding") == "chunked"
    if chunked:
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n") if body else b"0\r\n\r\n"
    else:
        headers["Content-Length"] = str(len(body))
        payload = body
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + payload


class LiveServer:
    """An HTTP server on a real socket, on a loop of its own, for raw requests.

    Args:
        start: Starts the server on that loop; returns its port and how to stop it.
    """

    def __init__(self, start: Callable[[], Awaitable[tuple[int, Callable[[], Awaitable[None]]]]]) -> None:
        self.loop = asyncio.new_event_loop()
        self.port, self._stop = self.loop.run_until_complete(start())
        self.sent = 0
        self.statuses: dict[int, int] = {}

    async def _send(self, raw: bytes) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(raw)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout=20)
        finally:
            writer.close()
        parts = status_line.split()
        assert len(parts) >= 2 and parts[0].startswith(b"HTTP/1."), status_line
        return int(parts[1])

    def send(self, raw: bytes) -> int:
        status = self.loop.run_until_complete(self._send(raw))
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return status

    def close(self) -> None:
        self.loop.run_until_complete(self._stop())
        self.loop.close()


async def _start_api_app() -> tuple[int, Callable[[], Awaitable[None]]]:
    settings_ = WebRTCSettings(allowed_origins=[ALLOWED_ORIGIN], allowed_hosts=["rooms.example.org"])
    server = TestServer(api_app(settings_), host="127.0.0.1")
    await server.start_server()
    return server.port, server.close


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer(_start_api_app)
    yield server
    print(f"\nHTTP fuzz: {server.sent} requests, statuses {dict(sorted(server.statuses.items()))}")
    server.close()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=REQUESTS)
def test_no_request_gets_a_5xx(live_server, request):
    status = live_server.send(_raw_request(*request))
    assert status < 500, request
