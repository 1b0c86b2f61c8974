"""One ASR engine made of several: a default model plus a dedicated model per language.

``asr.routes`` in ``config.yaml`` sends a language to its own model
(``{es: nvidia/stt_es_fastconformer_hybrid_large_pc, ja: "whisper:large-v3-turbo"}``);
every other language goes to the default model. :class:`RoutedASREngine` is what the
pipeline sees: one ``ASREngine`` whose ``languages`` are the union of its models', which
sends each utterance to the model of the utterance's language.

Each model is one engine instance, loaded once, whichever number of languages route to it
(``bot.app`` builds one engine per distinct engine/model/options and hands the same
instance to every route naming it, and to the default when a route names the default's
model). Batching stays per model: a batch is split by model and each part goes to that
model's ``transcribe_batch``, and concurrent single calls meet in each model's own
micro-batcher as before.

Language identification (``detect_language``) is done by the first model that can: the
default, else the routes' models in the order of their languages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from pipeline.engines.base import ASREngine, Transcript
from pipeline.errors import UnsupportedLanguageError
from pipeline.languages import normalize

__all__ = ["RoutedASREngine"]


class RoutedASREngine(ASREngine):
    """The default ASR engine plus one engine per routed language.

    Args:
        default: Transcribes every language without a route.
        routes: Language (any tag the registry normalises) → the engine for it. The same
            instance may serve several languages, and may be ``default`` itself.

    Raises:
        UnsupportedLanguageError: (from :meth:`load`) a route's engine does not
            transcribe the route's language.
    """

    name: ClassVar[str] = "routed"

    def __init__(self, default: ASREngine, routes: Mapping[str, ASREngine]) -> None:
        self.default = default
        self.routes: dict[str, ASREngine] = {
            normalize(str(language), strict=False): engine for language, engine in routes.items()
        }
        self.detects_language = any(e.detects_language for e in self.engines())

    # --- the models ----------------------------------------------------------------------

    def engines(self) -> list[ASREngine]:
        """Every distinct engine, the default first, then in the order of route languages."""
        out: list[ASREngine] = [self.default]
        for language in sorted(self.routes):
            engine = self.routes[language]
            if all(engine is not seen for seen in out):
                out.append(engine)
        return out

    def engine_for(self, language: str) -> ASREngine:
        """The engine that transcribes ``language``.

        Raises:
            UnsupportedLanguageError: no route for it and the default does not know it.
        """
        code = normalize(language, strict=False)
        engine = self.routes.get(code)
        if engine is not None:
            return engine
        if code in self.default.languages:
            return self.default
        raise UnsupportedLanguageError(
            f"asr: no model transcribes '{language}' (the default '{_label(self.default)}' knows "
            f"{', '.join(sorted(self.default.languages))}; routes: "
            f"{', '.join(sorted(self.routes)) or 'none'}); add one under asr.routes"
        )

    @property
    def languages(self) -> frozenset[str]:  # type: ignore[override]
        """Every language some model transcribes: the default's plus the routed ones."""
        return frozenset(self.default.languages) | frozenset(self.routes)

    # --- Engine ------------------------------------------------------------------------

    def load(self) -> None:
        """Load every model once, then check each route's model knows its language."""
        for engine in self.engines():
            engine.load()
        for language, engine in sorted(self.routes.items()):
            if language not in engine.languages:
                raise UnsupportedLanguageError(
                    f"asr.routes.{language}: '{_label(engine)}' does not transcribe '{language}' "
                    f"(it knows: {', '.join(sorted(engine.languages))})"
                )
        self.detects_language = any(e.detects_language for e in self.engines())

    def warmup(self) -> None:
        """Warm every model up once."""
        for engine in self.engines():
            engine.warmup()

    def close(self) -> None:
        """Close every model once."""
        for engine in self.engines():
            engine.close()

    # --- ASREngine ---------------------------------------------------------------------

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        """Transcribe with the model of ``language``; ``extra["route"]`` names the route used
        (the language, or ``"default"``)."""
        engine = self.engine_for(language)
        code = normalize(language, strict=False)
        transcript = engine.transcribe(pcm, sample_rate, code)
        transcript.extra.setdefault("route", self._route_name(code, engine))
        return transcript

    def transcribe_batch(self, items: list[tuple[np.ndarray, int, str]]) -> list[Transcript]:
        """Split the batch by model; each model transcribes its part as one batch."""
        groups: dict[int, tuple[ASREngine, list[int]]] = {}
        codes = [normalize(language, strict=False) for _, _, language in items]
        for index, code in enumerate(codes):
            engine = self.engine_for(code)
            groups.setdefault(id(engine), (engine, []))[1].append(index)
        results: list[Transcript | None] = [None] * len(items)
        for engine, indexes in groups.values():
            outputs = engine.transcribe_batch([(items[i][0], items[i][1], codes[i]) for i in indexes])
            for index, transcript in zip(indexes, outputs, strict=True):
                transcript.extra.setdefault("route", self._route_name(codes[index], engine))
                results[index] = transcript
        return [result for result in results if result is not None]

    def detect_language(self, pcm: np.ndarray, sample_rate: int) -> list[tuple[str, float]]:
        """The first model that identifies languages does (see the module doc).

        Raises:
            NotImplementedError: none of the models can.
        """
        for engine in self.engines():
            if engine.detects_language:
                return engine.detect_language(pcm, sample_rate)
        return super().detect_language(pcm, sample_rate)

    def _route_name(self, language: str, engine: ASREngine) -> str:
        code = normalize(language, strict=False)
        return code if self.routes.get(code) is engine else "default"


def _label(engine: ASREngine) -> str:
    model = getattr(engine, "model_name", None)
    return f"{engine.name} {model}" if model else engine.name
