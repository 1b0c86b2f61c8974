"""The ``polyvox`` command line.

``polyvox translate IN... --from en --to es -o OUT.wav`` interprets recordings;
``polyvox convert IN --voice NAME -o OUT.wav`` changes a recording's voice;
``polyvox serve`` starts the server; ``polyvox config`` shows the resolved settings.
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


def _setup_logging(verbosity: int) -> None:
    """INFO from polyvox, WARNING and up from libraries; ``-v`` shows everything."""
    logger.remove()
    level = "DEBUG" if verbosity > 0 else "INFO" if verbosity == 0 else "WARNING"

    def keep(record) -> bool:  # type: ignore[no-untyped-def]
        if verbosity > 1:
            return True
        ours = (record["name"] or "").startswith(_OUR_MODULES)
        return ours or record["level"].no >= logger.level("WARNING").no

    logger.add(sys.stderr, level=level, filter=keep, format="{time:HH:mm:ss} {level:<7} {message}")


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
    tr.add_argument("--from", dest="source", metavar="LANG", help="spoken language (default: languages.speaker)")
    tr.add_argument("--to", dest="target", metavar="LANG", help="language to interpret into (default: first of languages.listeners)")
    tr.add_argument("-o", "--output", required=True, metavar="OUT.wav", help="where to write the interpretation")
    tr.add_argument("--captions", metavar="OUT.json", help="also write transcripts, translations and latencies")
    tr.add_argument("--realtime", action="store_true", help="feed audio at real-time pace, as a live call would (slower; realistic latencies)")
    tr.add_argument("--sample-rate", type=int, default=None, metavar="HZ", help="output sample rate (default: the TTS engine's)")
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


def _cmd_voices(args: argparse.Namespace) -> int:
    from voices.cli import run_voices_command

    return run_voices_command(args, _settings(args))


def _cmd_serve(args: argparse.Namespace) -> int:
    from bot.app import check_engines, load_engines, session_factory
    from transports.webrtc import check_security, room_secret

    settings = _settings(args)
    check_engines(settings)
    # Fail before loading models when the server would expose rooms without tokens.
    check_security(settings.server.host, settings.webrtc, room_secret())
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    engines = ", ".join(f"{k} {settings.engine(k).engine}" for k in ("asr", "mt", "tts", "denoise"))
    print(f"polyvox serve: profile '{settings.profile}' ({engines})", flush=True)
    loaded = load_engines(settings)
    try:
        asyncio.run(_serve(settings, session_factory(settings, loaded), token))
    finally:
        loaded.close()
    return 0


async def _serve(settings, factory, discord_token: str) -> None:  # type: ignore[no-untyped-def]
    """The WebRTC room server, and the Discord bot when a token is set, on one loop,
    sharing one session factory (engines, interpretation settings, voice consent)."""
    from transports.webrtc import serve_webrtc

    def ready(server) -> None:  # type: ignore[no-untyped-def]
        print(f"polyvox: rooms at {server.url}/ (open it in two browser tabs to try)", flush=True)

    jobs = [
        serve_webrtc(
            factory,
            settings.webrtc,
            host=settings.server.host,
            port=settings.server.port,
            ready=ready,
        )
    ]
    if discord_token:
        from bot.discord_bot import serve_bot

        print("polyvox: starting the Discord bot (DISCORD_TOKEN is set)", flush=True)
        jobs.append(serve_bot(settings, settings.discord, factory, token=discord_token))
    else:
        print("polyvox: the Discord bot starts when DISCORD_TOKEN is set (README: Discord bot)", flush=True)
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        # Either ending (an error, or the bot closing) ends the server.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _cmd_models(args: argparse.Namespace) -> int:
    from pipeline.models import pull_command

    return pull_command(_settings(args), progress=not args.no_progress)


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

    # Recordings carry laughter too (events); voices and pictures are for live rooms.
    engines = load_engines(settings, optional=("events",))
    try:
        engines.check_languages([source], [target])
        result = asyncio.run(
            run_cascade_on_tracks(
                engines,
                tracks,
                [target],
                # Recordings are interpreted: the voice changer has its own command (convert).
                params=replace(interpretation_params(settings), mode="interpret"),
                realtime=args.realtime,
            )
        )
    finally:
        engines.close()
    document = write_outputs(
        result, target, args.output, args.captions, out_rate=args.sample_rate, inputs=list(args.inputs)
    )
    spoken = sum(r.utterance.duration for r in result.utterances)
    if not result.utterances:
        logger.info("no speech found in the input")
    for reason in result.errors:
        logger.warning(f"pipeline error: {reason}")
    logger.info(
        f"{len(result.utterances)} utterances ({spoken:.1f} s of speech) → {args.output}"
        + (f", captions → {args.captions}" if args.captions else "")
        + f"; {result.wall_seconds:.1f} s for {result.input_seconds:.1f} s of input"
    )
    lat = document["latency"].get("end_to_first_audio")
    if lat:
        logger.info(f"speech end → first audio: p50 {lat['p50']:.3f} s, p95 {lat['p95']:.3f} s")
    return 0


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
        "voices": _cmd_voices,
        "token": _cmd_token,
        "models": _cmd_models,
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
