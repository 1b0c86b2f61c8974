"""One interpretation session per voice channel: voice connection, room, cascade, captions.

A :class:`VoiceSession` connects one channel's discord.py voice connection to an
:class:`~pipeline.session.InterpretationSession` (made by the process's
``SessionFactory``, like every other transport's) through a
:class:`DiscordVoiceTransport`, and plays into the ``InterpretationAudioSource``. The
room (who speaks what, which languages the channel wants) lives as long as the session,
not the connection: when the voice connection drops (close codes 4006/4015, network
loss) the session connects again and carries on with the same room and pipeline.
Members joining and leaving go through the interpretation session, so a member who
leaves mid-sentence is still interpreted and then released from every stage.

The voice connection is reached only through the small :class:`VoiceIO` seam (connect,
make the audio source and the receiver, attach the receiver), so sessions can be
driven in tests without Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from loguru import logger

from pipeline.frames import CaptionFrame, ImageFrame, NoticeFrame
from pipeline.room import Room
from pipeline.session import InterpretationSession, SessionFactory
from transports.discord.transport import DiscordVoiceTransport, InterpretationSink

__all__ = [
    "CaptionFormatter",
    "DiscordVoiceIO",
    "SessionParams",
    "VoiceIO",
    "VoiceSession",
    "format_caption",
]

#: Discord's limit on one message's length.
MESSAGE_LIMIT = 2000


@dataclass
class SessionParams:
    """How a session keeps its voice connection (interpretation settings come from the
    ``SessionFactory``).

    Attributes:
        watch_interval_s: How often the voice connection is checked.
        reconnect_after_s: A connection down this long is replaced by a new one
            (discord.py resumes short outages itself).
        reconnect_backoff_s: Longest wait between two reconnection attempts.
        connect_timeout_s: Timeout of one voice connection attempt.
        caption_edit_interval_s: Least time between two caption calls to Discord for
            partial captions (its rate limit is about 5 per 5 s per channel).
    """

    watch_interval_s: float = 2.0
    reconnect_after_s: float = 10.0
    reconnect_backoff_s: float = 60.0
    connect_timeout_s: float = 30.0
    caption_edit_interval_s: float = 1.2


class VoiceIO(Protocol):
    """Everything a session needs from the voice connection layer."""

    async def connect(self, channel: Any, *, time_limit_s: float) -> Any:
        """Connect to ``channel`` within ``time_limit_s``; returns a connected ``discord.VoiceClient``."""
        ...

    def make_source(self) -> InterpretationSink:
        """A new audio source for the channel."""
        ...

    def make_receiver(self, voice_client: Any, on_audio: Callable[[int, bytes], None]) -> Any:
        """A ``VoiceReceiver`` for this connection's keys, calling ``on_audio``."""
        ...

    def attach(self, voice_client: Any, receiver: Any) -> Callable[[], None]:
        """Start feeding the connection's datagrams to ``receiver``; returns detach."""
        ...


class DiscordVoiceIO:
    """The real voice layer: discord.py's ``VoiceClient`` with our receiver and player."""

    async def connect(self, channel: Any, *, time_limit_s: float) -> Any:
        import discord

        # reconnect=True: discord.py resumes 4015 and retries network errors itself;
        # the session only steps in when that gives up.
        return await channel.connect(
            cls=discord.VoiceClient, timeout=time_limit_s, reconnect=True, self_deaf=False
        )

    def make_source(self) -> InterpretationSink:
        from transports.discord.player import InterpretationAudioSource

        return InterpretationAudioSource()

    def make_receiver(self, voice_client: Any, on_audio: Callable[[int, bytes], None]) -> Any:
        from transports.discord.receiver import VoiceReceiver

        receiver = VoiceReceiver(
            on_audio,
            # discord.py replaces its DAVE session on transitions: look it up each time.
            dave_session=lambda: getattr(getattr(voice_client, "_connection", None), "dave_session", None),
            sample_rate=16000,
        )
        _refresh_keys(voice_client, receiver)
        return receiver

    def attach(self, voice_client: Any, receiver: Any) -> Callable[[], None]:
        from transports.discord.hooks import attach_receiver

        return attach_receiver(voice_client, receiver)


def _refresh_keys(voice_client: Any, receiver: Any) -> None:
    mode = getattr(voice_client, "mode", None)
    key = getattr(voice_client, "secret_key", None)
    if mode and key and hasattr(receiver, "set_transport"):
        receiver.set_transport(str(mode), bytes(key))


def format_caption(caption: CaptionFrame, speaker: str) -> str:
    """One caption: the speaker, what they said, and each translation on its own line."""
    lines = [f"**{speaker}** ({caption.language}): {caption.text}"]
    lines += [f"> {lang}: {text}" for lang, text in caption.translations.items()]
    return "\n".join(lines)


CaptionFormatter = Callable[[CaptionFrame, str], str]


class _Capture:
    """Collects one member's audio for enrollment, on the receiver's thread."""

    def __init__(self, samples: int, loop: asyncio.AbstractEventLoop) -> None:
        self.wanted = samples
        self.parts: list[bytes] = []
        self.have = 0
        self.done = loop.create_future()
        self._loop = loop
        self._lock = threading.Lock()

    def feed(self, pcm: bytes) -> None:
        with self._lock:
            if self.have >= self.wanted:
                return
            self.parts.append(pcm)
            self.have += len(pcm) // 2
            full = self.have >= self.wanted
        if full:
            self._loop.call_soon_threadsafe(self._complete)

    def _complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def audio(self) -> np.ndarray:
        with self._lock:
            pcm = np.frombuffer(b"".join(self.parts), dtype=np.int16)
        return pcm[: self.wanted].copy()


class VoiceSession:
    """Interpretation of one voice channel.

    Args:
        channel: The voice channel (``discord.VoiceChannel`` or anything ``VoiceIO``
            can connect to; ``.id`` and ``.guild`` are used).
        factory: Makes the interpretation session (engines, settings, voice consent).
        room: This channel's participants and languages (kept across reconnects).
        voice_io: The voice connection layer.
        params: Behaviour around the pipeline.
        send_caption: Posts one caption message; ``None`` when captions are off. Looked
            up for every caption, so turning captions on or off applies at once.
        speaker_name: Display name of a user id, for captions.
        on_closed: Called once the session has stopped for good.
        post_image: Posts a picture someone asked for (with the speaker's name).
        notify: Tells one member something (a picture refused...).
    """

    def __init__(
        self,
        channel: Any,
        factory: SessionFactory,
        room: Room,
        *,
        voice_io: VoiceIO | None = None,
        params: SessionParams | None = None,
        send_caption: Callable[[], Callable[[str], Awaitable[Any]] | None] | None = None,
        speaker_name: Callable[[str], str] | None = None,
        on_closed: Callable[[VoiceSession], Awaitable[None]] | None = None,
        post_image: Callable[[ImageFrame, str], Awaitable[Any]] | None = None,
        notify: Callable[[NoticeFrame], Awaitable[Any]] | None = None,
    ) -> None:
        self.channel = channel
        self._post_image = post_image
        self._notify = notify
        self.room = room
        self.factory = factory
        self.params = params or SessionParams()
        self._io = voice_io or DiscordVoiceIO()
        self._send_caption = send_caption or (lambda: None)
        self._speaker_name = speaker_name or (lambda uid: room.participant(uid).name or uid)
        self._on_closed = on_closed
        self.source: InterpretationSink = self._io.make_source()
        self.transport = DiscordVoiceTransport(self.source, room=self.room)
        self.transport.add_event_handler("on_caption", self._queue_caption)
        self.transport.add_event_handler("on_image", self._on_image)
        self.transport.add_event_handler("on_notice", self._on_notice)
        self.interpretation: InterpretationSession = factory.create(
            self.transport, name=f"voice channel {channel.id}", room=room
        )
        self.voice_client: Any = None
        self.receiver: Any = None
        self._detach: Callable[[], None] | None = None
        self._keys: tuple[Any, Any] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._caption_task: asyncio.Task[None] | None = None
        self._captions: asyncio.Queue[CaptionFrame | None] = asyncio.Queue()
        self._captures: dict[int, list[_Capture]] = {}
        self._captures_lock = threading.Lock()
        self._last_caption_call = 0.0
        self._stopping = False
        self._closed = asyncio.Event()
        self.reconnects = 0
        #: True while the session replaces a dropped connection (its own disconnect is
        #: then not a moderator's).
        self.reconnecting = False

    @property
    def guild_id(self) -> int:
        return self.channel.guild.id

    @property
    def running(self) -> bool:
        return self.interpretation.running and not self._stopping

    @property
    def errors(self) -> list[str]:
        """Errors the pipeline reported."""
        return self.interpretation.errors

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the pipeline, connect to the channel and start playing.

        Raises:
            Whatever connecting raises (``asyncio.TimeoutError``, ``discord.ClientException``);
            the pipeline is torn down again in that case.
        """
        self._caption_task = asyncio.create_task(self._post_captions(), name="captions")
        try:
            await self.interpretation.start()
            await self._connect()
        except BaseException:
            await self.stop()
            raise
        self._watch_task = asyncio.create_task(self._watch(), name=f"voice-watch-{self.channel.id}")
        logger.info(f"interpreting voice channel {self.channel.id} into {', '.join(self.room.listener_languages)}")

    async def stop(self) -> None:
        """Disconnect, let the pipeline finish what it holds, and stop. Idempotent."""
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        current = asyncio.current_task()
        if self._watch_task is not None and self._watch_task is not current:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        await self._disconnect()
        await self.interpretation.stop(drain=True)
        if self._caption_task is not None:
            # Captions of the last utterances are still worth posting; a stuck post is not.
            self._captions.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._caption_task), 5)
            except TimeoutError:
                self._caption_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._caption_task
        with self._captures_lock:
            captures = [c for cs in self._captures.values() for c in cs]
            self._captures.clear()
        for capture in captures:
            if not capture.done.done():
                capture.done.set_result(None)
        self._closed.set()
        if self._on_closed is not None:
            await self._on_closed(self)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # -- voice connection ---------------------------------------------------------

    async def _connect(self) -> None:
        self.voice_client = await self._io.connect(self.channel, time_limit_s=self.params.connect_timeout_s)
        self._attach()
        self.voice_client.play(self.source)

    def _attach(self) -> None:
        if self._detach is not None:
            with contextlib.suppress(Exception):
                self._detach()
            self._detach = None
        self.receiver = self._io.make_receiver(self.voice_client, self._on_audio)
        self._detach = self._io.attach(self.voice_client, self.receiver)
        self._keys = _key_of(self.voice_client)

    async def _disconnect(self) -> None:
        if self._detach is not None:
            with contextlib.suppress(Exception):
                self._detach()
            self._detach = None
        vc, self.voice_client = self.voice_client, None
        if vc is not None:
            with contextlib.suppress(Exception):
                vc.stop()
            with contextlib.suppress(Exception):
                await vc.disconnect(force=True)

    async def _watch(self) -> None:
        """Keep the channel connected, attached and playing while the session runs."""
        down_since: float | None = None
        backoff = self.params.watch_interval_s
        while not self._stopping:
            await asyncio.sleep(self.params.watch_interval_s)
            vc = self.voice_client
            if vc is not None and vc.is_connected():
                down_since = None
                backoff = self.params.watch_interval_s
                if _key_of(vc) != self._keys:
                    # discord.py resumed or reconnected by itself: new keys, maybe a new
                    # socket. The receiver must follow or it decrypts nothing.
                    logger.info(f"voice connection of {self.channel.id} was renewed; re-attaching")
                    self.reconnects += 1
                    self._attach()
                if not vc.is_playing() and self.source is not None:
                    vc.play(self.source)
                continue
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since < self.params.reconnect_after_s:
                continue
            logger.warning(f"voice connection of {self.channel.id} is down; reconnecting")
            self.reconnecting = True
            try:
                await self._disconnect()
                await self._connect()
            except Exception as exc:  # noqa: BLE001 - try again later, keep the room
                logger.warning(f"reconnecting to {self.channel.id} failed: {exc!r}; retrying in {backoff:.0f} s")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.params.reconnect_backoff_s)
            else:
                self.reconnects += 1
                down_since = None
                logger.info(f"reconnected to voice channel {self.channel.id}")
            finally:
                self.reconnecting = False

    # -- audio in -----------------------------------------------------------------

    def _on_audio(self, user_id: int, pcm: bytes) -> None:
        """The receiver's callback (its thread): enrollment captures, then the pipeline."""
        if self._captures:
            with self._captures_lock:
                captures = list(self._captures.get(int(user_id), ()))
            for capture in captures:
                capture.feed(pcm)
        self.transport.receive_audio(user_id, pcm)

    def feed_audio(self, user_id: int, pcm: bytes) -> None:
        """Hand one member's decoded 16 kHz audio to the session, as the receiver does."""
        self._on_audio(user_id, pcm)

    async def capture(self, user_id: int, seconds: float = 10.0, give_up_after_s: float = 30.0) -> np.ndarray:
        """The next ``seconds`` of ``user_id``'s speech in the channel (16 kHz mono int16).

        Discord sends audio only while someone talks, so this is speech, not wall time.
        Returns what arrived when ``give_up_after_s`` passes first (possibly nothing).
        """
        capture = _Capture(int(seconds * 16000), asyncio.get_running_loop())
        with self._captures_lock:
            self._captures.setdefault(int(user_id), []).append(capture)
        try:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(capture.done), give_up_after_s)
        finally:
            with self._captures_lock:
                mine = self._captures.get(int(user_id), [])
                if capture in mine:
                    mine.remove(capture)
                if not mine:
                    self._captures.pop(int(user_id), None)
        return capture.audio()

    # -- members ------------------------------------------------------------------

    async def member_joined(self, user_id: int, *, language: str | None, name: str) -> None:
        """A member is in the channel: their language, name, and voice (enrolled, unless
        they refused cloning; their Discord id is their identity for consent)."""
        await self.interpretation.join(str(user_id), language=language, name=name, identity=str(user_id))

    async def member_left(self, user_id: int) -> None:
        """A member left the channel: what they were saying is still interpreted, then
        every stage forgets them (decoder state here, lanes and buffers in the pipeline)."""
        if self.receiver is not None and hasattr(self.receiver, "remove_user"):
            with contextlib.suppress(Exception):
                self.receiver.remove_user(int(user_id))
        await self.interpretation.leave(str(user_id))

    # -- pictures and notices -----------------------------------------------------

    async def _on_image(self, _transport: Any, image: ImageFrame) -> None:
        if self._post_image is None:
            return
        try:
            await self._post_image(image, self._speaker_name(image.user_id))
        except Exception as exc:  # noqa: BLE001 - a picture is not worth stopping the room
            logger.warning(f"posting a picture in {self.channel.id} failed: {exc!r}")

    async def _on_notice(self, _transport: Any, notice: NoticeFrame) -> None:
        if self._notify is None:
            return
        try:
            await self._notify(notice)
        except Exception as exc:  # noqa: BLE001
            logger.warning(f"telling {notice.user_id} failed: {exc!r}")

    # -- captions -----------------------------------------------------------------

    async def _queue_caption(self, _transport: Any, caption: CaptionFrame) -> None:
        self._captions.put_nowait(caption)

    async def _post_captions(self) -> None:
        """Post captions as people speak, within Discord's rate limits.

        A partial caption opens a message for its utterance (``… `` marks it unfinished)
        and later partials edit it, at most one call per ``params.caption_edit_interval_s``
        (partials in between are skipped: the next one shows more anyway). The final
        caption edits that message into its final form, or, for utterances that had no
        message, is posted; several final ones ready at once go out as one message."""
        messages: dict[int, Any] = {}
        finished = False
        while not finished:
            batch: list[CaptionFrame] = []
            item = await self._captions.get()
            while True:
                if item is None:  # stop() is done with the pipeline
                    finished = True
                else:
                    batch.append(item)
                if self._captions.empty():
                    break
                item = self._captions.get_nowait()
            send = self._send_caption()
            if send is None or not batch:
                messages.clear()
                continue
            finals = [c for c in batch if c.final]
            final_ids = {c.utterance.id for c in finals}
            latest: dict[int, CaptionFrame] = {}
            for caption in batch:
                if not caption.final and caption.utterance.id not in final_ids:
                    latest[caption.utterance.id] = caption
            posting = ""
            for caption in finals:
                text = format_caption(caption, self._speaker_name(caption.user_id))[:MESSAGE_LIMIT]
                message = messages.pop(caption.utterance.id, None)
                if message is not None and await self._safe_edit(message, text):
                    continue
                if posting and len(posting) + 1 + len(text) > MESSAGE_LIMIT:
                    await self._safe_send(send, posting)
                    posting = ""
                posting = f"{posting}\n{text}" if posting else text
            if posting:
                await self._safe_send(send, posting)
            for caption in latest.values():
                if time.monotonic() - self._last_caption_call < self.params.caption_edit_interval_s:
                    continue
                text = f"{format_caption(caption, self._speaker_name(caption.user_id))} …"[:MESSAGE_LIMIT]
                message = messages.get(caption.utterance.id)
                if message is None:
                    sent = await self._safe_send(send, text)
                    if sent is not None and hasattr(sent, "edit"):
                        messages[caption.utterance.id] = sent
                else:
                    await self._safe_edit(message, text)
            # Utterances that never got a final caption must not keep their message forever.
            while len(messages) > 64:
                messages.pop(next(iter(messages)))

    async def _safe_send(self, send: Callable[[str], Awaitable[Any]], message: str) -> Any:
        self._last_caption_call = time.monotonic()
        try:
            return await send(message)
        except Exception as exc:  # noqa: BLE001 - a caption is not worth stopping the room
            logger.warning(f"posting captions for {self.channel.id} failed: {exc!r}")
            return None

    async def _safe_edit(self, message: Any, text: str) -> bool:
        self._last_caption_call = time.monotonic()
        try:
            await message.edit(content=text)
            return True
        except Exception as exc:  # noqa: BLE001 - post it anew instead
            logger.debug(f"editing a caption in {self.channel.id} failed: {exc!r}")
            return False


def _key_of(voice_client: Any) -> tuple[Any, Any]:
    key = getattr(voice_client, "secret_key", None)
    return (getattr(voice_client, "mode", None), bytes(key) if key else None)
