"""Wiring a :class:`VoiceReceiver` into discord.py 2.7's voice connection.

discord.py sends voice but does not decode what it receives; it does expose the two
places a receiver needs (read from the installed ``discord/voice_state.py`` and
``discord/gateway.py``):

* ``VoiceConnectionState.add_socket_listener(callback)``: its socket-reader thread
  calls ``callback(datagram)`` for every UDP datagram (and pauses while none is
  registered). The receiver's :meth:`~VoiceReceiver.feed` is registered there.
* the voice websocket hook: ``DiscordVoiceWebSocket`` awaits ``_hook(ws, msg)`` after
  handling each JSON message; new websockets (reconnects) take the hook from
  ``VoiceConnectionState.hook``. The hook installed here reads

  - op 4 SESSION_DESCRIPTION → the negotiated ``mode`` and ``secret_key`` (after
    discord.py stored them on the connection state, so they are read from there);
  - op 5 SPEAKING ``{user_id, ssrc, speaking}`` → ``map_ssrc``;
  - op 12 CLIENT_CONNECT ``{user_id, audio_ssrc, video_ssrc}`` (sent by the server
    for other clients' streams) → ``map_ssrc`` with the video SSRC to ignore;
  - op 13 CLIENT_DISCONNECT ``{user_id}`` → ``remove_user``.

  (op 11 CLIENTS_CONNECT carries only user ids, no SSRC: nothing to map.)

The DAVE session is the one discord.py creates in ``reinit_dave_session`` on the
connection state (``state.dave_session``, for its own sending); the same MLS group
holds the decryptors for the other members, so the receiver is given a provider that
always returns the current one. DAVE is used only while the negotiated protocol
version is non-zero.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any

from loguru import logger

from transports.discord.receiver import VoiceReceiver

__all__ = [
    "OP_CLIENT_CONNECT",
    "OP_CLIENT_DISCONNECT",
    "OP_SESSION_DESCRIPTION",
    "OP_SPEAKING",
    "attach_receiver",
    "handle_voice_message",
]

# Voice gateway opcodes (discord.gateway.DiscordVoiceWebSocket, voice gateway v8).
OP_SESSION_DESCRIPTION = 4
OP_SPEAKING = 5
OP_CLIENT_CONNECT = 12
OP_CLIENT_DISCONNECT = 13

Hook = Callable[[Any, dict[str, Any]], Coroutine[Any, Any, Any]]


def handle_voice_message(receiver: VoiceReceiver, state: Any, msg: dict[str, Any]) -> None:
    """Apply one voice-gateway JSON message to ``receiver``.

    Args:
        receiver: The receiver to update.
        state: The ``VoiceConnectionState`` (read for mode, key and DAVE state).
        msg: The message as discord.py decoded it (``{"op": ..., "d": ...}``).
    """
    op = msg.get("op")
    data = msg.get("d") or {}
    if op == OP_SESSION_DESCRIPTION:
        mode = getattr(state, "mode", None) or data.get("mode")
        key = getattr(state, "secret_key", None) or data.get("secret_key")
        if mode and key:
            receiver.set_transport(mode, bytes(key))
    elif op == OP_SPEAKING:
        if data.get("user_id") is not None and data.get("ssrc"):
            receiver.map_ssrc(int(data["ssrc"]), int(data["user_id"]))
    elif op == OP_CLIENT_CONNECT:
        if data.get("user_id") is not None:
            receiver.map_ssrc(
                int(data.get("audio_ssrc") or 0), int(data["user_id"]), video_ssrc=data.get("video_ssrc") or None
            )
    elif op == OP_CLIENT_DISCONNECT:
        if data.get("user_id") is not None:
            receiver.remove_user(int(data["user_id"]))


def attach_receiver(
    voice_client: Any, receiver: VoiceReceiver, *, flush_interval: float | None = 0.02
) -> Callable[[], None]:
    """Feed ``voice_client``'s incoming voice into ``receiver``.

    Registers the receiver on discord.py's socket reader, installs a voice-websocket
    hook (chained with any hook already there, and carried over to websockets created
    on reconnect), takes the current mode/key/DAVE session, and starts a daemon
    thread calling ``receiver.flush()`` every ``flush_interval`` seconds.

    Args:
        voice_client: A connected (or connecting) ``discord.VoiceClient``.
        receiver: The receiver to feed.
        flush_interval: Seconds between flushes; ``None`` to flush yourself.

    Returns:
        A function that undoes all of it (idempotent).
    """
    state = voice_client._connection
    previous: Hook | None = state.hook

    async def hook(ws: Any, msg: dict[str, Any]) -> None:
        if previous is not None:
            await previous(ws, msg)
        try:
            handle_voice_message(receiver, state, msg)
        except Exception:
            logger.exception("Discord voice receiver: could not handle voice message op {}", msg.get("op"))

    def dave_session() -> Any:
        # Only while DAVE is negotiated: after a downgrade the session lingers in
        # passthrough mode, and frames are plain Opus.
        return state.dave_session if getattr(state, "dave_protocol_version", 0) else None

    mode, key = getattr(state, "mode", None), getattr(state, "secret_key", None)
    if isinstance(mode, str) and key:
        try:
            receiver.set_transport(mode, bytes(key))
        except (TypeError, ValueError):
            logger.warning("Discord voice receiver: cannot use the current session key (mode {})", mode)
    receiver.set_dave_session(dave_session)

    state.hook = hook
    ws = getattr(state, "ws", None)
    if ws:
        ws._hook = hook
    state.add_socket_listener(receiver.feed)

    stop = threading.Event()
    if flush_interval:
        thread = threading.Thread(
            target=_flush_loop, args=(receiver, flush_interval, stop), name="voice-receiver-flush", daemon=True
        )
        thread.start()

    def detach() -> None:
        if stop.is_set():
            return
        stop.set()
        state.remove_socket_listener(receiver.feed)
        if state.hook is hook:
            state.hook = previous
        current_ws = getattr(state, "ws", None)
        if current_ws and current_ws.__dict__.get("_hook") is hook:
            if previous is None:
                del current_ws._hook  # back to the class's no-op
            else:
                current_ws._hook = previous

    return detach


def _flush_loop(receiver: VoiceReceiver, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        receiver.flush()
