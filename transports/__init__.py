"""Transports that carry participants' audio into the cascade and the interpretation back.

``discord/`` and ``webrtc/`` arrive with their issues; both produce pipecat
``UserAudioRawFrame`` (16 kHz mono, ``user_id`` set) and consume
``pipeline.frames.InterpretationAudioFrame``, so the processors in
``pipeline/`` serve every transport unchanged. ``polyvox translate`` drives the
same processors from a file (``pipeline/file_mode.py``).
"""
