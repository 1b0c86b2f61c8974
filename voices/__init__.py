"""Voice profiles: capture from first utterances, enrollment, the store, consent.

* :mod:`voices.profile` — :class:`~voices.profile.VoiceProfile` (XTTS conditioning
  latents + speaker embedding + metadata) and the :class:`~voices.profile.VoiceCloner`
  interface cloning TTS engines implement (``XTTSEngine.condition``).
* :mod:`voices.capture` / :mod:`voices.capture_processor` — automatic capture: a
  participant's first ~6 s of clean speech become their voice, refined up to ~30 s;
  kept in memory for the session only. ``VoiceCaptureProcessor`` runs it in the cascade
  after ASR and honours opt-outs.
* :mod:`voices.enrollment` / :mod:`voices.store` — enrollment from a recording (3-60 s
  of speech, measured with the VAD) persisted in SQLite + tensor files under a data
  directory; ``forget`` deletes a user's rows and files; opt-outs.
* :mod:`voices.cli` — ``polyvox voices enroll USER FILE | list | forget USER``.

Only cloning engines (``xtts``) use profiles; the offline profile's espeak-ng engine
speaks everyone in its neutral voice.
"""
