"""``polyvox voices enroll USER FILE [--changer-target] | list | forget USER | untarget USER``.

``bot/cli.py`` adds the parser with :func:`add_voices_parser` and runs
:func:`run_voices_command`; the three ``*_voice(s)`` functions are the commands
themselves, each returning what to print, for chat commands to reuse. Errors are raised
as polyvox errors (``AudioInputError`` for bad audio: exit status 1; others: 2), which
``bot.cli.main`` turns into one line on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from voices.profile import VoiceCloner
from voices.store import VoiceStore

__all__ = [
    "DEFAULT_DATA_DIR",
    "add_voices_parser",
    "enroll_changer_target",
    "enroll_voice",
    "forget_voice",
    "list_voices",
    "run_voices_command",
    "voices_data_dir",
]

#: Where enrolled voices live unless ``voices.data_dir`` says otherwise.
DEFAULT_DATA_DIR = "~/.local/share/polyvox/voices"


def enroll_voice(
    store: VoiceStore,
    engine: VoiceCloner | Callable[[], VoiceCloner],
    user_id: str,
    path: str | os.PathLike[str],
) -> str:
    """Enroll ``user_id`` from the audio file ``path``; returns the line to print.

    Args:
        store: Where the profile goes.
        engine: The cloning engine, or a loader of it: called only once the file
            passed every check (exists, size, decodes, 3-60 s of speech).
        user_id: Whose voice this is.
        path: The recording.
    """
    profile = store.enroll_file(user_id, path, engine)
    return (
        f"enrolled the voice of {user_id} from {os.fsdecode(path)}: "
        f"{profile.seconds:.1f} s of speech (profile {profile.id[:8]}, version {profile.version})"
    )


def list_voices(store: VoiceStore) -> str:
    """A table of the stored voices and opt-outs."""
    voices = store.list()
    if not voices:
        return f"no voices stored in {store.data_dir}"
    rows = [("user", "profile", "version", "speech", "enrolled", "voice-changer target", "cloning")]
    for voice in voices:
        enrolled = (
            dt.datetime.fromtimestamp(voice.created).strftime("%Y-%m-%d %H:%M")
            if voice.created is not None
            else "-"
        )
        rows.append(
            (
                voice.user_id,
                voice.profile_id[:8] if voice.profile_id else "-",
                str(voice.version) if voice.version is not None else "-",
                f"{voice.seconds:.1f} s" if voice.seconds is not None else "-",
                enrolled,
                "allowed" if voice.changer_target else "-",
                "opted out" if voice.opted_out else "on",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def forget_voice(store: VoiceStore, user_id: str) -> str:
    """Delete the stored voice of ``user_id``; returns the line to print."""
    if store.forget(user_id):
        return f"deleted the voice profile of {user_id} and its files"
    return f"no voice profile stored for {user_id}; nothing to delete"


def voices_data_dir(settings: Any) -> Path:
    """``voices.data_dir`` from the settings, else :data:`DEFAULT_DATA_DIR`."""
    section = getattr(settings, "voices", None)
    configured = getattr(section, "data_dir", None) if section is not None else None
    return Path(os.path.expanduser(str(configured or DEFAULT_DATA_DIR)))


def add_voices_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``voices enroll|list|forget`` to the ``polyvox`` subcommands.

    Args:
        sub: The ``add_subparsers()`` object of the ``polyvox`` parser.
        common: Adds the options every command takes (``--config``, ``--set``, ...).
    """
    voices = sub.add_parser(
        "voices",
        help="enrolled voice profiles: enroll, list, forget",
        description="Manage persisted voice profiles (cloned voices) and opt-outs.",
    )
    actions = voices.add_subparsers(dest="voices_command", metavar="ACTION", required=True)
    enroll = actions.add_parser(
        "enroll",
        help="clone USER's voice from an audio file",
        description="Clone USER's voice from FILE (wav, mp3, ogg, m4a, ...: 3-60 s of speech) and store it.",
    )
    enroll.add_argument("user", metavar="USER", help="user id (Discord user id, WebRTC name, ...)")
    enroll.add_argument("file", metavar="FILE", help="recording of USER speaking, 3-60 s of speech")
    enroll.add_argument(
        "--changer-target", action="store_true",
        help="USER allows others to speak in this voice with the voice changer (needs a vc engine)",
    )
    common(enroll)
    untarget = actions.add_parser("untarget", help="withdraw USER's voice as a voice-changer target")
    untarget.add_argument("user", metavar="USER", help="user id")
    common(untarget)
    listing = actions.add_parser("list", help="list stored voices and opt-outs")
    common(listing)
    forget = actions.add_parser("forget", help="delete everything stored for USER's voice")
    forget.add_argument("user", metavar="USER", help="user id")
    common(forget)


def run_voices_command(args: argparse.Namespace, settings: Any) -> int:
    """Run the parsed ``voices`` command with the resolved settings; prints the result."""
    store = VoiceStore(voices_data_dir(settings))
    if args.voices_command == "list":
        print(list_voices(store))
    elif args.voices_command == "forget":
        print(forget_voice(store, args.user))
    elif args.voices_command == "untarget":
        removed = store.remove_changer_target(args.user)
        print(
            f"{args.user}'s voice is no longer a voice-changer target" if removed
            else f"{args.user}'s voice was not a voice-changer target; nothing to withdraw"
        )
    elif args.voices_command == "enroll" and getattr(args, "changer_target", False):
        print(enroll_changer_target(store, settings, args.user, args.file))
    elif args.voices_command == "enroll":
        # Cheap checks first: the configuration, then the file (size, decoding, speech
        # by the VAD); the voice model (~10 s, 1.1 GB for XTTS) loads only after both.
        _require_cloning_engine(settings)
        loaded: list[Any] = []

        def load_engine() -> Any:
            loaded.append(_load_cloning_engine(settings))
            return loaded[-1]

        try:
            print(enroll_voice(store, load_engine, args.user, args.file))
        finally:
            for engine in loaded:
                engine.close()
    else:  # pragma: no cover - argparse allows only the three
        raise ConfigError(f"unknown voices command {args.voices_command!r}")
    return 0


def enroll_changer_target(store: VoiceStore, settings: Any, user_id: str, path: str) -> str:
    """Enroll ``user_id``'s voice from ``path`` as a voice-changer target (their
    permission for others to speak in it), and as their cloned voice too when the TTS
    engine clones; returns the lines to print."""
    from pipeline.engines.registry import create_engine, engine_class
    from voices.consent import VoiceConsent

    section = settings.optional_engine("vc")
    if section is None:
        raise ConfigError(
            f"profile '{settings.profile}' has no voice-conversion engine: use --profile cpu or gpu, "
            "or --set vc.engine=openvoice"
        )
    recording = store.check_file(path)  # before any model loads
    converter = create_engine("vc", section.engine, model=section.model, device=section.device, options=section.options)
    try:
        converter.load()
        consent = VoiceConsent(store, converter=converter)
        seconds = consent.enroll_changer_target_blocking(user_id, recording.measure.speech, name=os.fsdecode(path))
    finally:
        converter.close()
    lines = [f"{user_id}'s voice ({seconds:.1f} s of speech) may now be used as a voice-changer target"]
    if getattr(engine_class("tts", settings.tts.engine), "clones_voices", False):
        engine = _load_cloning_engine(settings)
        try:
            lines.append(enroll_voice(store, engine, user_id, path))
        finally:
            engine.close()
    return "\n".join(lines)


def _require_cloning_engine(settings: Any) -> None:
    """Refuse a configured TTS engine that cannot clone voices (imports it, loads nothing)."""
    from pipeline.engines.registry import engine_class

    if _remote_tts(settings):
        return  # the engines app's TTS decides; checked once connected
    tts = settings.tts
    if not getattr(engine_class("tts", tts.engine), "clones_voices", False):
        raise ConfigError(
            f"tts engine '{tts.engine}' cannot clone voices; enroll with a profile that uses "
            "xtts (--profile cpu or gpu)"
        )


def _remote_tts(settings: Any) -> bool:
    """Whether TTS runs on the engines app (``engines.backend: ray``)."""
    return getattr(getattr(settings, "engines", None), "backend", "local") == "ray"


def _load_cloning_engine(settings: Any) -> Any:
    """The configured TTS engine, created and loaded (the slow part of enrolling)."""
    from pipeline.engines.registry import create_engine

    _require_cloning_engine(settings)
    if _remote_tts(settings):
        # The voice is computed by a TTS replica of the engines app (engines.backend: ray).
        from bot.app import remote_connection
        from pipeline.engines.remote import RemoteTTSEngine

        remote = RemoteTTSEngine(remote_connection(settings))
        remote.load()
        if not remote.clones_voices:
            remote.close()
            raise ConfigError(f"the engines app's tts engine '{remote.name}' cannot clone voices")
        return remote
    tts = settings.tts
    engine = create_engine("tts", tts.engine, model=tts.model, device=tts.device, options=tts.options)
    engine.load()
    return engine
