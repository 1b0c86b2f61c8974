"""``polyvox serve`` starting up and meeting faults: what can be checked before any model
loads fails in one line, and a Discord that cannot be reached never takes the WebRTC
rooms down."""

from __future__ import annotations

import asyncio
import socket
import sys

import aiohttp
import discord
import pytest
from loguru import logger

from bot.cli import _serve, main
from bot.config import load_settings
from bot.preflight import check_port
from pipeline.errors import ConfigError
from pipeline.session import SessionFactory
from tests.fakes import fake_engines
from transports.webrtc.client import RoomClient


@pytest.fixture
def no_model_loads(monkeypatch):
    """Loading engines fails the test: these problems must be found before."""

    def refuse(*args, **kwargs):
        raise AssertionError("polyvox serve loaded models before finding the problem")

    monkeypatch.setattr("bot.app.load_engines", refuse)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)


@pytest.fixture(autouse=True)
def loguru_restored():
    """``main`` points loguru at the test's captured stderr: give it the real one back."""
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture
def busy_port():
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on leaving: nothing listens there


def test_check_port_names_a_busy_port_and_a_foreign_address(busy_port):
    with pytest.raises(ConfigError, match=f"server.port {busy_port}: 127.0.0.1:{busy_port} is already in use"):
        check_port("127.0.0.1", busy_port)
    with pytest.raises(ConfigError, match="not an address of this machine"):
        check_port("192.0.2.1", 8080)  # TEST-NET-1: never this machine's
    check_port("127.0.0.1", closed_port())  # free: fine
    check_port("127.0.0.1", 0)


def test_a_busy_port_is_one_line_before_any_model_loads(busy_port, no_model_loads, capsys):
    assert main(["serve", "--profile", "offline", "--set", f"server.port={busy_port}"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"polyvox: error: server.port {busy_port}: 127.0.0.1:{busy_port} is already in use (another polyvox serve?); "
        f"stop that program or pick another port: --set server.port={busy_port + 1}"
    ]
    assert "polyvox serve:" not in captured.out  # not even the engines' banner


def test_a_missing_model_is_one_line_before_any_model_loads(no_model_loads, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asr_model = load_settings(profile="gpu").asr.model
    assert main(["serve", "--profile", "gpu", "--set", f"server.port={closed_port()}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"asr.model '{asr_model}'" in line and "polyvox models pull --profile gpu" in line


def test_a_bad_config_is_one_line(no_model_loads, capsys):
    assert main(["serve", "--set", "server.port=99999"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("polyvox: error:") and "server.port" in line


async def test_discord_unreachable_leaves_the_rooms_running_and_retries(monkeypatch, tmp_path):
    """Discord's API pointed at a closed loopback port: the bot logs one line per
    attempt and tries again, while the room server answers and people join rooms."""
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{closed_port()}/api/v10")
    port = closed_port()
    settings = load_settings(
        profile="offline",
        overrides=[f"server.port={port}", f"discord.database={tmp_path / 'discord.sqlite3'}", "discord.sync_commands=false"],
    )
    factory = SessionFactory(fake_engines())
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    ready = asyncio.Event()
    task = asyncio.ensure_future(
        _serve(settings, factory, "a.fake.token", server_ready=lambda _server: ready.set(), bot_retry_s=0.05)
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        for _ in range(300):
            if len([line for line in lines if "cannot reach Discord" in line]) >= 2:
                break
            await asyncio.sleep(0.05)
        attempts = [line for line in lines if "cannot reach Discord" in line]
        assert len(attempts) >= 2, lines
        assert "the WebRTC rooms keep running" in attempts[0] and "(attempt 1)" in attempts[0]
        assert "(attempt 2)" in attempts[1]
        assert "Traceback" not in "\n".join(lines)
        # Meanwhile the rooms work: health, and a participant joining a room.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "ok"
        client = RoomClient(f"http://127.0.0.1:{port}", "lobby", name="Ada", listen_only=True)
        await client.join()
        assert client.participant_id
        await client.leave()
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        logger.remove(sink)
