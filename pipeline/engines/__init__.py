"""Frame-free model wrappers (VAD, denoise, ASR, MT, TTS), each behind a small base class."""
