"""Remote engines without a cluster: what a room server makes of replicas that die, apps
that are gone and engines that fail, and the settings of ``engines:`` and Discord shards.

The deployment handles here are fakes that answer or raise what Ray Serve's would
(``ray.exceptions``, ``ray.serve.exceptions``); ``tests/test_ray_engines.py`` runs the
real thing on a local Ray instance.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the ray extra (ray[serve]) is not installed")

import ray.exceptions as rex  # noqa: E402
from ray.serve import exceptions as serve_exceptions  # noqa: E402
from ray.serve._private.common import DeploymentID  # noqa: E402

from bot.config import load_settings  # noqa: E402
from bot.discord_settings import DiscordSettings  # noqa: E402
from pipeline.engines.base import RedecodingASRStream, Transcript  # noqa: E402
from pipeline.engines.remote import (  # noqa: E402
    EnginesUnreachableError,
    RayEnginesConnection,
    RemoteASREngine,
    RemoteMTEngine,
    RemoteTTSEngine,
    ReplicaDiedError,
    init_ray,
)
from pipeline.errors import (  # noqa: E402
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)


class FakeResponse:
    """A ``DeploymentResponse``: its result, or the exception Ray would raise."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.cancelled = False

    def result(self, timeout_s: float | None = None) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class FakeStream(FakeResponse):
    """A ``DeploymentResponseGenerator``: items, then maybe an exception."""

    def __init__(self, items: list[Any], error: BaseException | None = None) -> None:
        super().__init__(None)
        self.items = items
        self.error = error

    def __iter__(self):
        yield from self.items
        if self.error is not None:
            raise self.error


class FakeMethod:
    def __init__(self, outcomes: list[Any]) -> None:
        self.outcomes = deque(outcomes)
        self.calls: list[tuple[Any, ...]] = []
        self.responses: list[FakeResponse] = []

    def remote(self, *args: Any) -> FakeResponse:
        self.calls.append(args)
        outcome = self.outcomes.popleft()
        response = outcome if isinstance(outcome, FakeResponse) else FakeResponse(outcome)
        self.responses.append(response)
        return response


class FakeHandle:
    def __init__(self, **methods: FakeMethod) -> None:
        self.methods = methods

    def options(self, **_: Any) -> FakeHandle:
        return self

    def __getattr__(self, name: str) -> FakeMethod:
        return self.__dict__["methods"][name]


INFO = {
    "asr": {"name": "pocketsphinx", "languages": ["en"], "sample_rate": 16000, "supports_streaming": True},
    "mt": {"name": "apertium", "pairs": [["en", "es"], ["es", "en"]]},
    "tts": {"name": "espeak", "languages": ["en", "es"], "sample_rate": 22050, "clones_voices": False},
}


def connection(**handles: FakeHandle) -> RayEnginesConnection:
    """A connection that is already 'connected' to fake handles."""
    conn = RayEnginesConnection("auto", "test-app")
    conn._handles = dict(handles)  # noqa: SLF001 - what connect() would have found
    conn._info = INFO  # noqa: SLF001
    return conn


def died() -> rex.ActorDiedError:
    return rex.ActorDiedError()


def from_replica(error: Exception) -> Exception:
    """What a replica raising ``error`` looks like to the caller."""
    return rex.RayTaskError("transcribe", "Traceback ...", error).as_instanceof_cause()


HEARD = Transcript("hello world", "en")


def test_a_call_whose_replica_dies_is_retried_once_on_another():
    method = FakeMethod([died(), HEARD])
    conn = connection(asr=FakeHandle(transcribe=method))
    asr = RemoteASREngine(conn)
    assert asr.transcribe(np.zeros(1600, np.int16), 16000, "en") == HEARD
    assert len(method.calls) == 2
    assert conn.retries == {"asr": 1}
    assert conn.in_flight == {"asr": 0}


def test_a_second_death_fails_the_call_with_a_retryable_error():
    method = FakeMethod([died(), died()])
    asr = RemoteASREngine(connection(asr=FakeHandle(transcribe=method)))
    with pytest.raises(ReplicaDiedError) as caught:
        asr.transcribe(np.zeros(1600, np.int16), 16000, "en")
    assert caught.value.retryable
    assert len(method.calls) == 2  # retried once, not forever


def test_engine_errors_come_back_as_themselves_and_are_not_retried():
    refused = EngineError("model fell over", retryable=False)
    method = FakeMethod([from_replica(refused)])
    mt = RemoteMTEngine(connection(mt=FakeHandle(translate=method)))
    with pytest.raises(EngineError) as caught:
        mt.translate(["hello"], "en", "es")
    assert caught.value is refused and not caught.value.retryable
    assert len(method.calls) == 1


def test_a_crash_inside_the_replica_is_an_engine_error_naming_the_stage():
    method = FakeMethod([from_replica(ZeroDivisionError("division by zero"))])
    mt = RemoteMTEngine(connection(mt=FakeHandle(translate=method)))
    with pytest.raises(EngineError, match="mt replica failed in translate: division by zero"):
        mt.translate(["hello"], "en", "es")


def test_an_app_that_is_gone_fails_at_once_as_unreachable():
    gone = serve_exceptions.DeploymentUnavailableError(DeploymentID(name="asr", app_name="test-app"))
    method = FakeMethod([gone, HEARD])
    asr = RemoteASREngine(connection(asr=FakeHandle(transcribe=method)))
    with pytest.raises(EnginesUnreachableError, match="engines app 'test-app'") as caught:
        asr.transcribe(np.zeros(1600, np.int16), 16000, "en")
    assert caught.value.retryable
    assert len(method.calls) == 1
    # When it is back, the same engine works again: nothing to reconnect by hand.
    assert asr.transcribe(np.zeros(1600, np.int16), 16000, "en") == HEARD


def test_a_tts_stream_is_retried_only_before_its_first_chunk():
    chunks = [np.full(100, i, np.int16) for i in range(3)]
    method = FakeMethod([FakeStream([], died()), FakeStream(chunks)])
    tts = RemoteTTSEngine(connection(tts=FakeHandle(synthesize=method)))
    got = list(tts.synthesize("hola", "es"))
    assert [int(c[0]) for c in got] == [0, 1, 2]
    assert len(method.calls) == 2

    # Dying after a chunk was played cannot be retried: the listener would hear it twice.
    method = FakeMethod([FakeStream(chunks[:2], died()), FakeStream(chunks)])
    tts = RemoteTTSEngine(connection(tts=FakeHandle(synthesize=method)))
    stream = tts.synthesize("hola", "es")
    assert int(next(stream)[0]) == 0
    assert int(next(stream)[0]) == 1
    with pytest.raises(ReplicaDiedError, match="after 2 chunks"):
        next(stream)
    assert len(method.calls) == 1


def test_closing_a_tts_stream_early_cancels_the_request():
    method = FakeMethod([FakeStream([np.ones(10, np.int16)] * 5)])
    conn = connection(tts=FakeHandle(synthesize=method))
    stream = RemoteTTSEngine(conn).synthesize("hola", "es")
    next(stream)
    stream.close()
    assert method.responses[0].cancelled
    assert conn.in_flight == {"tts": 0}


def test_capabilities_are_the_deployed_engines_and_wrong_languages_fail_here():
    transcribe = FakeMethod([Transcript("one", "en"), Transcript("one two", "en")])
    conn = connection(asr=FakeHandle(transcribe=transcribe))
    asr, mt, tts = RemoteASREngine(conn), RemoteMTEngine(conn), RemoteTTSEngine(conn)
    assert (asr.name, mt.name, tts.name) == ("pocketsphinx", "apertium", "espeak")
    assert asr.languages == {"en"} and asr.sample_rate == 16000 and asr.supports_streaming
    assert mt.pairs() == [("en", "es"), ("es", "en")] and mt.supports("en", "es") and not mt.supports("en", "fr")
    assert tts.languages == {"en", "es"} and tts.sample_rate == 22050 and not tts.clones_voices
    with pytest.raises(UnsupportedLanguageError):
        asr.transcribe(np.zeros(160, np.int16), 16000, "fr")
    with pytest.raises(UnsupportedLanguageError):
        mt.translate(["x"], "en", "fr")
    with pytest.raises(UnsupportedLanguageError):
        tts.synthesize("x", "fr")
    assert transcribe.calls == []  # refused without a round trip
    assert not asr.detects_language
    with pytest.raises(NotImplementedError):
        asr.detect_language(np.zeros(160, np.int16), 16000)
    # A remote stream re-decodes through transcribe: stateless requests any replica can take.
    stream = asr.open_stream("en")
    assert isinstance(stream, RedecodingASRStream)
    stream.feed(np.zeros(3200, np.int16))
    assert stream.finalize().text == "one"
    assert len(transcribe.calls) == 1


def test_spoken_language_identification_runs_on_a_replica_where_the_engine_has_it():
    detect = FakeMethod([[("es", 0.9), ("en", 0.1)]])
    conn = connection(asr=FakeHandle(detect_language=detect))
    conn._info = {**INFO, "asr": {**INFO["asr"], "detects_language": True}}  # noqa: SLF001
    asr = RemoteASREngine(conn)
    assert asr.detects_language
    assert asr.detect_language(np.zeros(16000, np.int16), 16000) == [("es", 0.9), ("en", 0.1)]
    assert len(detect.calls) == 1


def test_voices_are_conditioned_by_a_tts_replica():
    from voices.profile import VoiceCloner, VoiceLatents

    latents = VoiceLatents(np.ones((1, 32, 16), np.float32), np.ones((1, 8, 1), np.float32))
    method = FakeMethod([latents])
    conn = connection(tts=FakeHandle(condition=method))
    conn._info = {**INFO, "tts": {**INFO["tts"], "name": "xtts", "clones_voices": True}}  # noqa: SLF001
    tts = RemoteTTSEngine(conn)
    assert tts.clones_voices and isinstance(tts, VoiceCloner)
    speech = np.full(16000 * 4, 1000, np.int16)
    assert tts.condition(speech, 16000) is latents
    (pcm, rate), = method.calls
    assert rate == 16000 and np.array_equal(pcm, speech)


def test_nothing_listening_at_the_address_is_one_line_at_once():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError) as caught:
        init_ray(f"127.0.0.1:{port}", timeout_s=10)
    assert time.monotonic() - started < 9  # the probe answers, not Ray's minutes of retries
    message = str(caught.value)
    assert "\n" not in message
    assert f"engines.address 127.0.0.1:{port}: nothing answers there" in message
    assert "polyvox engines serve" in message


def test_engines_settings_are_checked_with_one_line_errors():
    settings = load_settings(
        profile="gpu",
        overrides=[
            "engines.backend=ray", "engines.address=ray://head.example.org:10001",
            "engines.asr.num_gpus=0.25", "engines.tts.autoscaling={min_replicas: 1, max_replicas: 3}",
        ],
    )
    assert settings.engines.backend == "ray" and settings.engines.asr.num_gpus == 0.25
    from bot.engines_app import stage_specs

    specs = stage_specs(settings)
    assert specs["asr"].name == "nemo"
    assert type(specs["mt"].build()).__name__ == "NLLBMTEngine"  # built as a local room server would
    asr_options = specs["asr"].deployment_options("asr")
    assert asr_options["ray_actor_options"]["num_gpus"] == 0.25 and asr_options["num_replicas"] == 1
    tts_options = specs["tts"].deployment_options("tts")
    assert "num_replicas" not in tts_options
    assert tts_options["autoscaling_config"]["max_replicas"] == 3
    # What `serve deploy` and KubeRay's RayService build from a config file.
    from ray.serve import Application

    from bot.engines_app import app_builder

    assert isinstance(app_builder({"profile": "gpu", "set": ["engines.asr.num_gpus=0.25"]}), Application)
    for bad, key in [
        ("engines.backend=spark", "engines.backend"),
        ("engines.address=head", "engines.address"),
        ("engines.app_name=a b", "engines.app_name"),
        ("engines.mt.num_gpus=-1", "engines.mt.num_gpus"),
        ("engines.tts.autoscaling={min_replicas: 3, max_replicas: 1}", "engines.tts.autoscaling"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_settings(overrides=[bad])


def test_discord_shards_are_checked_and_only_shard_zero_registers_commands():
    assert DiscordSettings().registers_commands
    first = DiscordSettings(shard_count=4, shard_ids=[0, 1])
    second = DiscordSettings(shard_count=4, shard_ids=[2, 3])
    assert first.registers_commands and not second.registers_commands
    for bad in ({"shard_ids": [0]}, {"shard_count": 2, "shard_ids": [2]}, {"shard_count": 2, "shard_ids": [1, 1]}):
        with pytest.raises(ValueError, match="shard"):
            DiscordSettings(**bad)


def test_the_bot_runs_only_its_own_shards(tmp_path):
    from bot.discord_bot import PolyvoxBot
    from pipeline.session import SessionFactory
    from tests.fakes import fake_engines

    settings = load_settings(profile="offline")
    bot = PolyvoxBot(
        settings=settings,
        discord_settings=DiscordSettings(database=str(tmp_path / "d.sqlite3"), shard_count=4, shard_ids=[2, 3]),
        factory=SessionFactory(fake_engines()),
    )
    assert bot.shard_count == 4 and bot.shard_ids == [2, 3]
    unsharded = PolyvoxBot(
        settings=settings,
        discord_settings=DiscordSettings(database=str(tmp_path / "e.sqlite3")),
        factory=SessionFactory(fake_engines()),
    )
    assert unsharded.shard_count is None and unsharded.shard_ids is None  # Discord's recommendation
