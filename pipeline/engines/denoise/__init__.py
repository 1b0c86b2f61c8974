"""Noise suppression engines.

A :class:`~pipeline.engines.base.DenoiseEngine` hands out one pipecat ``BaseAudioFilter``
per participant (filters hold recurrent state); the input transport runs it on the
participant's audio before VAD. Every filter gives back as many samples as it is given,
over time; filters that delay the audio by a fixed amount say so in ``latency_ms``.

Engines:
    none: :class:`pipeline.engines.denoise.passthrough.PassthroughDenoiseEngine`, audio
        unchanged, no latency.
    rnnoise: :class:`pipeline.engines.denoise.rnnoise.RNNoiseDenoiseEngine`, pipecat's
        RNNoise filter, 20 ms latency (extra ``polyvox[offline]``).
    deepfilternet: :class:`pipeline.engines.denoise.deepfilternet.DeepFilterNetDenoiseEngine`,
        DeepFilterNet3 through its C runtime, ~41 ms latency at 16 kHz, stronger
        suppression (extra ``polyvox[deepfilternet]``).
"""
