"""Voice consent in one place: who may be cloned, their enrolled voice, and forgetting.

:class:`VoiceConsent` wraps the one :class:`~voices.store.VoiceStore` (enrolled profiles
and opt-outs) that the CLI, the Discord commands and every room use. Running
interpretation sessions subscribe to it, so a change (``/voice off``, the page's toggle,
``/voice forget``) applies in every room the person is in, at once: their interpretation
switches to a neutral voice and any voice captured from them this session is discarded.

Participants are matched by *identity*: the key their voice is stored under (a Discord
user id, the user a WebRTC room token was issued to). Participants without an identity
(an anonymous page visitor, a phone caller) can still opt out for their session; nothing
about them is stored.

**Voice-changer targets.** Speaking in someone else's voice (voice mode) needs that
person's explicit permission: they enroll their voice *as a voice-changer target*
(:meth:`VoiceConsent.enroll_changer_target`; ``--changer-target`` on the CLI,
``changer_target`` on ``/voice enroll``). Only such voices, and only while their owner
has not opted out, are returned by :meth:`VoiceConsent.changer_target`; withdrawing the
permission, opting out or ``forget`` takes the voice away from anyone using it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from loguru import logger

from pipeline.errors import ConfigError
from voices.profile import VoiceCloner, VoiceProfile
from voices.store import VoiceStore

__all__ = ["ConsentListener", "VoiceConsent", "consent_notice"]

#: Called with ``(identity, allowed, forgotten)`` after a change of someone's consent.
ConsentListener = Callable[[str, bool, bool], Awaitable[None]]


def consent_notice(*, clones: bool, how_to_opt_out: str) -> str:
    """What people are told when they join a room, so nobody is cloned unknowingly.

    Args:
        clones: Whether this server's voice engine clones voices.
        how_to_opt_out: The way to refuse in this transport ("/voice off", "the switch
            'Clone my voice'", ...).
    """
    if not clones:
        return "Interpretations are spoken in a neutral synthetic voice; no voice is cloned or stored."
    return (
        "Interpretations imitate each speaker's own voice: it is learnt from your first "
        "sentences and kept only for this session, unless you enrolled a voice. "
        f"To use a neutral voice instead, {how_to_opt_out}."
    )


class VoiceConsent:
    """The consent policy: opt-outs, enrolled voices and deletion, for every transport.

    Every method that touches the store runs it in a worker thread (SQLite and file I/O,
    and enrollment runs the model), so they are safe to await on the event loop.

    Args:
        store: Enrolled profiles and opt-outs; ``None`` keeps nothing (opt-outs then
            hold for the session only).
        engine: The TTS engine, for enrollment; enrolling needs one that clones voices.
        converter: The voice-conversion engine, for voice-changer targets.
    """

    def __init__(self, store: VoiceStore | None = None, *, engine: Any | None = None,
                 converter: Any | None = None) -> None:
        self.store = store
        self.engine = engine
        self.converter = converter
        self._listeners: list[ConsentListener] = []

    @property
    def clones(self) -> bool:
        """Whether the voice engine clones voices at all."""
        return bool(getattr(self.engine, "clones_voices", False))

    # -- sessions --------------------------------------------------------------------

    def subscribe(self, listener: ConsentListener) -> Callable[[], None]:
        """Call ``listener`` after every change; returns the function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def _notify(self, identity: str, allowed: bool, forgotten: bool) -> None:
        for listener in list(self._listeners):
            try:
                await listener(identity, allowed, forgotten)
            except Exception as exc:  # noqa: BLE001 - one session's trouble must not block the rest
                logger.opt(exception=exc).warning(f"applying the voice consent of {identity} failed: {exc}")

    # -- reading ---------------------------------------------------------------------

    def allowed_blocking(self, identity: str | None) -> bool:
        """Whether ``identity`` may be cloned (blocking; anonymous people may, until they say no)."""
        if identity is None or self.store is None:
            return True
        return not self.store.is_opted_out(identity)

    async def allowed(self, identity: str | None) -> bool:
        """Whether ``identity`` may be cloned."""
        return await asyncio.to_thread(self.allowed_blocking, identity)

    def enrolled_voice_blocking(self, identity: str | None) -> VoiceProfile | None:
        """The enrolled voice of ``identity`` (blocking); ``None`` when opted out or none."""
        if identity is None or self.store is None or not self.clones:
            return None
        if self.store.is_opted_out(identity):
            return None
        return self.store.get(identity)

    async def enrolled_voice(self, identity: str | None) -> VoiceProfile | None:
        """The enrolled voice of ``identity``; ``None`` when opted out or none."""
        return await asyncio.to_thread(self.enrolled_voice_blocking, identity)

    def changer_target_blocking(self, identity: str | None) -> np.ndarray | None:
        """The voice-changer target of ``identity`` (blocking): only when they enrolled
        it with that permission and have not opted out; ``None`` otherwise."""
        if identity is None or self.store is None:
            return None
        if self.store.is_opted_out(identity):
            return None
        return self.store.changer_target(identity)

    async def changer_target(self, identity: str | None) -> np.ndarray | None:
        """See :meth:`changer_target_blocking`."""
        return await asyncio.to_thread(self.changer_target_blocking, identity)

    async def status(self, identity: str) -> str | None:
        """One line about the stored profile of ``identity``, or ``None``."""
        if self.store is None:
            return None
        voices = await asyncio.to_thread(self.store.list)
        for voice in voices:
            if voice.user_id == identity and voice.profile_id is not None:
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(voice.created or 0))
                return f"enrolled with {voice.seconds:.1f} s of speech on {when} (version {voice.version})"
        return None

    # -- changing --------------------------------------------------------------------

    async def set_allowed(self, identity: str, allowed: bool) -> None:
        """Record ``identity``'s choice and apply it in every running session at once."""
        if self.store is not None:
            await asyncio.to_thread(self.store.opt_out, identity, not allowed)
        logger.info(f"voice cloning {'allowed' if allowed else 'refused'} by {identity}")
        await self._notify(identity, allowed, False)

    async def forget(self, identity: str) -> bool:
        """Delete every stored profile row and tensor file of ``identity``, and discard what
        running sessions captured from them. An opt-out stays: it is their refusal.

        Returns:
            Whether a stored profile was deleted.
        """
        deleted = False
        if self.store is not None:
            deleted = await asyncio.to_thread(self.store.forget, identity)
        allowed = await self.allowed(identity)
        await self._notify(identity, allowed, True)
        return deleted

    async def enroll(self, identity: str, pcm: np.ndarray, *, name: str = "recording") -> VoiceProfile:
        """Build and store ``identity``'s voice from 16 kHz speech; enrolling is consent.

        Raises:
            ConfigError: there is no store, or the engine does not clone voices.
            VoiceEnrollmentError, EngineError, VoiceStoreError: see ``VoiceStore.enroll``.
        """
        if self.store is None:
            raise ConfigError("no voice store is configured (voices.data_dir)")
        if not self.clones or not isinstance(self.engine, VoiceCloner):
            raise ConfigError(
                "this server's voice engine does not clone voices, so there is nothing to enroll "
                "(the gpu and cpu profiles use XTTS, which does)"
            )
        store, engine = self.store, self.engine
        profile = await asyncio.to_thread(store.enroll, identity, pcm, engine, name=name)
        await self._notify(identity, True, False)
        return profile

    def enroll_changer_target_blocking(self, identity: str, pcm: np.ndarray, *, name: str = "recording") -> float:
        """Store ``identity``'s voice (16 kHz speech, 3-60 s) as a voice-changer target:
        enrolling it this way is their permission for others to speak in it (blocking).

        Returns:
            Seconds of speech it was made from.

        Raises:
            ConfigError: no store, or no voice-conversion engine.
            VoiceEnrollmentError: silence, too little or too much speech.
            EngineError, VoiceStoreError: the model or the store failed.
        """
        from voices.enrollment import check_enrollment_speech

        if self.store is None:
            raise ConfigError("no voice store is configured (voices.data_dir)")
        if self.converter is None:
            raise ConfigError(
                "this server has no voice-conversion engine (vc.engine), so there are no voice-changer targets"
            )
        store = self.store
        measure = check_enrollment_speech(pcm, store._vad_engine(), store.limits, name=name)  # noqa: SLF001
        embedding = self.converter.embed(measure.speech, 16000)
        store.set_changer_target(identity, embedding, measure.seconds)
        return measure.seconds

    async def enroll_changer_target(self, identity: str, pcm: np.ndarray, *, name: str = "recording") -> float:
        """See :meth:`enroll_changer_target_blocking`; running sessions learn of it."""
        seconds = await asyncio.to_thread(self.enroll_changer_target_blocking, identity, pcm, name=name)
        await self._notify(identity, True, False)
        return seconds

    async def revoke_changer_target(self, identity: str) -> bool:
        """Withdraw the permission: the target is deleted and nobody speaks in that voice
        any more (running sessions switch those who did to a neutral voice at once).

        Returns:
            Whether there was a target.
        """
        removed = False
        if self.store is not None:
            removed = await asyncio.to_thread(self.store.remove_changer_target, identity)
        await self._notify(identity, await self.allowed(identity), False)
        return removed
