"""Voice activity detection engines.

A :class:`~pipeline.engines.base.VADEngine` holds one model shared by every participant and
hands out a :class:`~pipeline.engines.base.VADStream` per participant, which owns that
participant's recurrent state. Turning window probabilities into utterances is the job of
:class:`pipeline.segmenter.UtteranceSegmenter`, not of the engines.

Engines:
    silero: :class:`pipeline.engines.vad.silero.SileroVADEngine`, the Silero VAD ONNX model
        that ships inside pipecat (extra ``polyvox[offline]``).
"""
