"""The ``polyvox`` command line.

``polyvox translate IN... --from en --to es -o OUT.wav`` interprets recordings;
``polyvox convert IN --voice NAME -o OUT.wav`` changes a recording's voice;
``polyvox serve`` starts the server; ``polyvox config`` shows the resolved settings;
``polyvox doctor`` checks the machine.
Errors are one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from loguru import logger

__all__ = ["main"]

_OUR_MODULES = ("bot", "pipeline", "transports", "voices", "__main__")
_LOG_FORMAT = "{time:HH:mm:ss} {level:<7} {message}"
#: The stderr log handler: its id, level and filter (progress bars swap its sink).
_LOG: dict = {}


def _setup_logging(verbosity: int) -> None:
    """INFO from polyvox, WARNING and up from libraries; ``-v`` shows everything."""
    logger.remove()
    level = "DEBUG" if verbosity > 0 else "INFO" if verbosity == 0 else "WARNING"

    def keep(record) -> bool:  # type: ignore[no-untyped-def]
        if verbosity > 1:
            return True
        ours = (record["name"] or "").startswith(_OUR_MODULES)
        return ours or record["level"].no >= logger.level("WARNING").no

    _LOG.update(level=level, filter=keep)
    _LOG["id"] = logger.add(sys.stderr, level=level, filter=keep, format=_LOG_FORMAT)


class _TranslateProgress:
    """Two progress bars on stderr while ``translate`` runs: the input fed to the
    pipeline, and the input interpreted so far (with the utterances done). Log lines
    are written above the bars meanwhile."""

    def __init__(self, total_s: float, *, enabled: bool) -> None:
        from tqdm import tqdm

        self.enabled = enabled
        style = "{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]{postfix}"
        common = {"total": max(1, round(total_s)), "unit": "s", "disable": not enabled, "file": sys.stderr,
                  "bar_format": style, "dynamic_ncols": True}
        self.fed = tqdm(desc="fed        ", position=0, **common)
        self.done = tqdm(desc="interpreted", position=1, **common)
        self._sink_id: int | None = None

    def __enter__(self) -> _TranslateProgress:
        if self.enabled and "id" in _LOG:
            from tqdm import tqdm

            logger.remove(_LOG["id"])
            self._sink_id = logger.add(
                lambda message: tqdm.write(str(message), end="", file=sys.stderr),
                level=_LOG["level"], filter=_LOG["filter"], format=_LOG_FORMAT,
            )
        return self

    def update(self, progress) -> None:  # type: ignore[no-untyped-def]
        """A :class:`pipeline.file_mode.FileProgress`."""
        for bar, value in ((self.fed, progress.fed_s), (self.done, progress.done_s)):
            bar.n = min(bar.total, round(value))
        self.done.set_postfix_str(f" {progress.utterances} utterances", refresh=False)
        self.fed.refresh()
        self.done.refresh()

    def __exit__(self, *exc: object) -> None:
        self.fed.close()
        self.done.close()
        if self._sink_id is not None:
            logger.remove(self._sink_id)
            _LOG["id"] = logger.add(sys.stderr, level=_LOG["level"], filter=_LOG["filter"], format=_LOG_FORMAT)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="configuration file (default: ./config.yaml, else the built-in one)")
    parser.add_argument("--profile", help="engine profile: offline, cpu or gpu (default: the file's 'profile')")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set vad.min_silence_ms=400 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: libraries too)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyvox",
        description="Live speech interpretation in each speaker's own voice.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tr = sub.add_parser(
        "translate",
        help="interpret recordings through the live pipeline",
        description=(
            "Interpret one or more recordings (each one participant) into another language, "
            "through the same pipeline live rooms use. Writes the interpretation of every "
            "utterance, in order of speech end, and optionally a captions JSON."
        ),
    )
    tr.add_argument("inputs", nargs="+", metavar="IN", help="audio file (wav, mp3, ogg, flac, ...); several = several speakers")
    tr.add_argument(
        "--from", dest="source", metavar="LANG",
        help="spoken language, or 'auto' to identify it from the speech (default: languages.speaker)",
    )
    tr.add_argument("--to", dest="target", metavar="LANG", help="language to interpret into (default: first of languages.listeners)")
    tr.add_argument("-o", "--output", required=True, metavar="OUT.wav", help="where to write the interpretation")
    tr.add_argument("--captions", metavar="OUT.json", help="also write transcripts, translations and latencies")
    tr.add_argument("--realtime", action="store_true", help="feed audio at real-time pace, as a live call would (slower; realistic latencies)")
    tr.add_argument("--sample-rate", type=int, default=None, metavar="HZ", help="output sample rate (default: the TTS engine's)")
    tr.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    _common(tr)

    conv = sub.add_parser(
        "convert",
        help="the voice changer on a recording: the same speech in another voice, no text in between",
        description=(
            "Convert a recording into another voice through the live voice changer (chunk by chunk, "
            "timing kept). VOICE is a neutral voice of the engine or someone who enrolled their voice "
            "as a voice-changer target (polyvox voices enroll NAME FILE --changer-target)."
        ),
    )
    conv.add_argument("input", metavar="IN", help="audio file (wav, mp3, ogg, flac, ...)")
    conv.add_argument("--voice", metavar="NAME", help="target voice (default: the engine's first neutral voice)")
    conv.add_argument("-o", "--output", required=True, metavar="OUT.wav", help="where to write the converted audio")
    conv.add_argument("--realtime", action="store_true", help="feed audio at real-time pace (for latency measurements)")
    _common(conv)

    serve = sub.add_parser(
        "serve",
        help="start the interpretation server (WebRTC rooms; Discord bot with DISCORD_TOKEN)",
    )
    _common(serve)

    models = sub.add_parser("models", help="manage model weights (gpu/cpu profiles)")
    model_actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    pull = model_actions.add_parser(
        "pull",
        help="download the profile's models into the Hugging Face cache",
        description="Download every model the profile names (ASR, MT, TTS) ahead of time, with progress.",
    )
    pull.add_argument("--no-progress", action="store_true", help="no progress bars")
    _common(pull)

    engines = sub.add_parser("engines", help="the model stages on a Ray cluster (engines.backend: ray)")
    engine_actions = engines.add_subparsers(dest="engines_command", metavar="ACTION", required=True)
    engines_serve = engine_actions.add_parser(
        "serve",
        help="deploy ASR, MT and TTS as a Ray Serve application; Ctrl-C undeploys",
        description=(
            "Deploy the profile's ASR, MT and TTS engines as a Ray Serve application that room "
            "servers (polyvox serve --set engines.backend=ray) share, and keep it running. "
            "Ctrl-C undeploys it."
        ),
    )
    engines_serve.add_argument(
        "--address", metavar="ADDRESS",
        help="Ray cluster to deploy into: auto, HEAD:6379 or ray://HEAD:10001 "
        "(default: engines.address; none: start a Ray instance here)",
    )
    _common(engines_serve)

    tok = sub.add_parser("token", help="print a token that lets its holder join a WebRTC room")
    tok.add_argument("room", help="room name (letters, digits, '-', '_')")
    tok.add_argument("--ttl", type=int, metavar="SECONDS", help="validity (default: webrtc.token_ttl_s)")
    tok.add_argument(
        "--user", metavar="NAME",
        help="who the token is for: their enrolled voice (polyvox voices enroll NAME) and voice consent apply",
    )
    _common(tok)

    cfg = sub.add_parser("config", help="print the resolved configuration")
    _common(cfg)

    doc = sub.add_parser(
        "doctor",
        help="check this machine for what a profile needs, and say how to fix what is missing",
        description=(
            "Checks the Python extras, ffmpeg, libopus, Apertium pairs and espeak-ng voices for "
            "the configured languages, the models in the Hugging Face cache, the GPU and the "
            "server port, without loading any model. Exit status 1 when something is missing."
        ),
    )
    _common(doc)

    from voices.cli import add_voices_parser

    add_voices_parser(sub, _common)
    return parser


def _settings(args: argparse.Namespace, extra: list[str] | None = None):  # type: ignore[no-untyped-def]
    from bot.config import load_settings

    return load_settings(args.config, profile=args.profile, overrides=[*args.overrides, *(extra or [])])


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    settings = _settings(args)
    print(yaml.safe_dump(settings.model_dump(), sort_keys=False, allow_unicode=True), end="")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from bot.doctor import doctor_command

    return doctor_command(_settings(args))


def _cmd_voices(args: argparse.Namespace) -> int:
    from voices.cli import run_voices_command

    return run_voices_command(args, _settings(args))


def _cmd_serve(args: argparse.Namespace) -> int:
    from bot.app import check_engines, load_engines, session_factory
    from bot.preflight import check_models_present, check_port
    from pipeline.errors import ConfigError
    from transports.webrtc import check_security, room_secret

    # Everything that can be wrong without loading a model fails here, in one line:
    # the configuration, engine names, room security, the port, the models.
    settings = _settings(args)
    check_engines(settings)
    check_security(settings.server.host, settings.webrtc, room_secret())
    check_port(settings.server.host, settings.server.port)
    check_models_present(settings)
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    engines = ", ".join(f"{k} {settings.engine(k).engine}" for k in ("asr", "mt", "tts", "denoise"))
    print(f"polyvox serve: profile '{settings.profile}' ({engines})", flush=True)
    loaded = load_engines(settings)
    try:
        asyncio.run(_serve(settings, session_factory(settings, loaded), token))
    except OSError as exc:  # the port was taken while the engines loaded
        raise ConfigError(f"cannot listen on {settings.server.host}:{settings.server.port}: {exc.strerror or exc}") from None
    finally:
        loaded.close()
    return 0


async def _serve(settings, factory, discord_token: str, *, server_ready=None, bot_retry_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """The WebRTC room server, and the Discord bot when a token is set, on one loop,
    sharing one session factory (engines, interpretation settings, voice consent).

    The rooms are the server: the bot failing (Discord unreachable, a refused token, a
    bug) is logged and never takes them down (the bot retries after ``bot_retry_s``,
    doubling); the room server failing ends everything.
    """
    from transports.webrtc import serve_webrtc

    def ready(server) -> None:  # type: ignore[no-untyped-def]
        print(f"polyvox: rooms at {server.url}/ (open it in two browser tabs to try)", flush=True)
        if server_ready is not None:
            server_ready(server)

    rooms = asyncio.ensure_future(
        serve_webrtc(
            factory,
            settings.webrtc,
            host=settings.server.host,
            port=settings.server.port,
            ready=ready,
        )
    )
    bot: asyncio.Future[None] | None = None
    if discord_token:
        from bot.discord_bot import serve_bot

        print("polyvox: starting the Discord bot (DISCORD_TOKEN is set)", flush=True)
        bot = asyncio.ensure_future(
            serve_bot(settings, settings.discord, factory, token=discord_token, retry_after_s=bot_retry_s)
        )
        bot.add_done_callback(_bot_ended)
    else:
        print("polyvox: the Discord bot starts when DISCORD_TOKEN is set (README: Discord bot)", flush=True)
    try:
        await rooms
    finally:
        for task in (rooms, bot):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (rooms, bot) if t is not None), return_exceptions=True)


def _bot_ended(task: asyncio.Future[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.opt(exception=error).error(f"the Discord bot stopped ({error}); the WebRTC rooms keep running")
    else:
        logger.info("the Discord bot stopped; the WebRTC rooms keep running")


def _cmd_models(args: argparse.Namespace) -> int:
    from pipeline.models import pull_command

    return pull_command(_settings(args), progress=not args.no_progress)


def _cmd_engines(args: argparse.Namespace) -> int:
    from bot.engines_app import serve_engines

    settings = _settings(args)
    if args.address:
        from pydantic import ValidationError

        from pipeline.errors import ConfigError

        try:
            settings.engines.address = args.address
        except ValidationError:
            raise ConfigError(f"--address {args.address}: expected auto, HOST:PORT or ray://HOST:PORT") from None
    stages = ", ".join(f"{k} {settings.engine(k).engine}" for k in ("asr", "mt", "tts"))
    print(f"polyvox engines: profile '{settings.profile}' ({stages}) as Ray Serve app '{settings.engines.app_name}'", flush=True)

    def ready(address: str) -> None:
        print(
            f"polyvox engines: ready on the Ray cluster at {address}; room servers: polyvox serve "
            f"--set engines.backend=ray --set engines.address={address} (Ctrl-C undeploys)",
            flush=True,
        )

    serve_engines(settings, ready=ready)
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    import re

    from pipeline.errors import ConfigError
    from transports.webrtc.tokens import SECRET_ENV, make_token, room_secret

    settings = _settings(args)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.room):
        raise ConfigError(f"room '{args.room}': use 1-64 letters, digits, '-' or '_'")
    secret = room_secret()
    if not secret:
        raise ConfigError(f"{SECRET_ENV} is not set: export a long random secret (16+ characters) first")
    print(make_token(args.room, secret, ttl_s=args.ttl or settings.webrtc.token_ttl_s, user=args.user))
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bot.app import interpretation_params, load_engines
    from pipeline.audio import load_audio
    from pipeline.file_mode import SpeakerTrack, run_cascade_on_tracks, write_outputs
    from pipeline.languages import is_auto

    extra = []
    if args.source:
        extra.append(f"languages.speaker={args.source}")
    if args.target:
        extra.append(f"languages.listeners=[{args.target}]")
    settings = _settings(args, extra)
    source = settings.languages.speaker
    if not settings.languages.listeners:
        from pipeline.errors import ConfigError

        raise ConfigError("no target language: pass --to LANG")
    target = settings.languages.listeners[0]
    if args.sample_rate is not None and not 8000 <= args.sample_rate <= 192000:
        from pipeline.errors import ConfigError

        raise ConfigError(f"--sample-rate {args.sample_rate}: expected 8000–192000 Hz")

    # Read every input before loading models, so a bad file fails in milliseconds.
    tracks = []
    seen: set[str] = set()
    for path in args.inputs:
        pcm = load_audio(path)
        user = Path(path).stem or "speaker"
        while user in seen:
            user += "_"
        seen.add(user)
        tracks.append(SpeakerTrack(user_id=user, pcm=pcm, language=source))
        logger.info(f"{path}: {len(pcm) / 16000:.1f} s of audio, speaker '{user}' ({source})")

    from bot.preflight import check_models_present

    check_models_present(settings)
    # Recordings carry laughter too (events), and pictures when a trigger phrase is set
    # (interpretation.images.trigger); voices are for live rooms (`polyvox convert`).
    drawing = bool(settings.interpretation.images.trigger)
    engines = load_engines(settings, optional=("events", "image") if drawing else ("events",))
    bars = args.progress if args.progress is not None else sys.stderr.isatty()
    total_s = max(len(t.pcm) for t in tracks) / 16000
    try:
        # An 'auto' speaker is not checked here: their language is known only once identified.
        engines.check_languages([source], [target])
        with _TranslateProgress(total_s, enabled=bars) as progress:
            result = asyncio.run(
                run_cascade_on_tracks(
                    engines,
                    tracks,
                    [target],
                    # Recordings are interpreted: the voice changer has its own command (convert).
                    params=replace(interpretation_params(settings), mode="interpret"),
                    realtime=args.realtime,
                    progress=not bars,
                    on_progress=progress.update,
                )
            )
    finally:
        engines.close()
    document = write_outputs(
        result, target, args.output, args.captions, out_rate=args.sample_rate, inputs=list(args.inputs)
    )
    spoken = sum(r.utterance.duration for r in result.utterances)
    if is_auto(source):
        for track in tracks:
            heard = [r.utterance.language for r in result.utterances if r.user_id == track.user_id]
            if heard:
                counts = {code: heard.count(code) for code in dict.fromkeys(heard)}
                found = ", ".join(f"{code} ({n} utterance{'s' if n > 1 else ''})" for code, n in counts.items())
                logger.info(f"speaker '{track.user_id}' ({source}): {found}")
    if not result.utterances:
        logger.warning(
            f"no speech found in {', '.join(args.inputs)}: {args.output} is empty "
            "(silence, or speech too quiet or too short for the VAD: vad.threshold, vad.min_speech_ms)"
        )
    for reason in result.errors:
        logger.warning(f"pipeline error: {reason}")
    for user, text in dict.fromkeys((n["user_id"], n["text"]) for n in result.notices):
        logger.info(f"told {user}: {text}")
    for shown in document["pictures"]:
        logger.info(f"picture of “{shown['caption']}” ({shown['user_id']}, {shown['at']} s) → {shown['file']}")
    logger.info(
        f"{len(result.utterances)} utterances ({spoken:.1f} s of speech) → {args.output}"
        + (f", captions → {args.captions}" if args.captions else "")
        + f"; {result.wall_seconds:.1f} s for {result.input_seconds:.1f} s of input"
    )
    headline = latency_headline(document["latency"], realtime=args.realtime)
    if headline:
        logger.info(headline)
    return 0


def latency_headline(latency: dict, *, realtime: bool) -> str | None:
    """The one line of timing ``translate`` ends with, honest about what was measured.

    Fed at real-time pace (``--realtime``) the waits are what a live listener would have:
    speech end → first audio. Fed as fast as possible, utterances queue up behind one
    another, so those waits are queueing; what means something then is the engines'
    compute per utterance.
    """
    if realtime:
        lat = latency.get("end_to_first_audio")
        if not lat or lat.get("p50") is None:
            return None
        return f"speech end → first audio: p50 {lat['p50']:.3f} s, p95 {lat['p95']:.3f} s (real-time pace)"
    parts = []
    for key, label in (("compute_asr", "ASR"), ("compute_mt", "MT"), ("compute_tts_first", "TTS to first audio")):
        stats = latency.get(key)
        if stats and stats.get("p50") is not None:
            parts.append(f"{label} p50 {stats['p50']:.3f} s")
    if not parts:
        return None
    return (
        "engine compute per utterance: " + ", ".join(parts)
        + " (input fed faster than real time, so waits were queueing; --realtime measures latency)"
    )


def _cmd_convert(args: argparse.Namespace) -> int:
    import json

    from pipeline.audio import load_audio, write_wav
    from pipeline.engines.registry import create_engine
    from pipeline.errors import ConfigError
    from pipeline.voice_changer import resolve_changer_voice
    from pipeline.voice_file import describe, run_voice_changer_on_file
    from voices.cli import voices_data_dir
    from voices.consent import VoiceConsent
    from voices.store import VoiceStore

    settings = _settings(args)
    section = settings.optional_engine("vc")
    if section is None:
        raise ConfigError(
            f"profile '{settings.profile}' has no voice-conversion engine: use --profile cpu or gpu, "
            "or --set vc.engine=openvoice"
        )
    pcm = load_audio(args.input)  # a bad file fails before any model loads
    engine = create_engine("vc", section.engine, model=section.model, device=section.device, options=section.options)
    try:
        engine.load()
        consent = VoiceConsent(VoiceStore(voices_data_dir(settings)), converter=engine)

        async def run():  # type: ignore[no-untyped-def]
            voice = await resolve_changer_voice(engine, consent, args.voice)  # type: ignore[arg-type]
            from bot.app import interpretation_params

            params = interpretation_params(settings).voice_changer
            return voice, await run_voice_changer_on_file(engine, pcm, voice, params=params, realtime=args.realtime)  # type: ignore[arg-type]

        voice, result = asyncio.run(run())
    finally:
        engine.close()
    write_wav(args.output, result.audio, result.sample_rate)
    summary = describe(result)
    logger.info(f"{args.input} → {args.output} in the voice '{voice.name}': {json.dumps(summary)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``polyvox`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(-1 if args.quiet else args.verbose)
    from pipeline.errors import AudioInputError, PolyvoxError

    commands = {
        "translate": _cmd_translate,
        "convert": _cmd_convert,
        "serve": _cmd_serve,
        "config": _cmd_config,
        "doctor": _cmd_doctor,
        "voices": _cmd_voices,
        "token": _cmd_token,
        "models": _cmd_models,
        "engines": _cmd_engines,
    }
    started = time.monotonic()
    try:
        return commands[args.command](args)
    except AudioInputError as exc:
        print(f"polyvox: error: {exc}", file=sys.stderr)
        return 1
    except (PolyvoxError, ImportError) as exc:
        print(f"polyvox: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"polyvox: interrupted after {time.monotonic() - started:.1f} s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
