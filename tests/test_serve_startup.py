"""``polyvox serve`` starting up and meeting faults: what can be checked before any model
loads fails in one line, and a Discord that cannot be reached never takes the WebRTC
rooms down."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import discord
import pytest
from loguru import logger

from bot.cli import _serve
from bot.config import load_settings
from bot.preflight import check_port
from pipeline.errors import ConfigError
from pipeline.session import SessionFactory
from tests.fakes import fake_engines
from transports.webrtc.client import RoomClient

REPO = Path(__file__).resolve().parent.parent


def polyvox(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    """The command line of this checkout (not whatever ``polyvox`` is on the PATH)."""
    import os

    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, **(env or {})},
    )


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


def test_a_busy_port_is_one_line_before_any_model_loads(busy_port):
    result = polyvox("serve", "--profile", "offline", "--set", f"server.port={busy_port}", env={"DISCORD_TOKEN": ""})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"polyvox: error: server.port {busy_port}: 127.0.0.1:{busy_port} is already in use (another polyvox serve?); "
        f"stop that program or pick another port: --set server.port={busy_port + 1}"
    ]
    assert "loading" not in result.stdout + result.stderr


def test_a_missing_model_is_one_line_before_any_model_loads():
    result = polyvox("serve", "--profile", "gpu", "--set", f"server.port={closed_port()}", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "nvidia/parakeet-tdt-0.6b-v2" in line and "polyvox models pull --profile gpu" in line
    assert "loading" not in result.stdout  # not even the denoiser, which comes first


def test_a_bad_config_is_one_line():
    result = polyvox("serve", "--set", "server.port=99999")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
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
