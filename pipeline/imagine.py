"""Speech-to-image: when a sentence is a picture request, and how often one may ask.

A participant asks for a picture in one of three ways: the page's "draw what I say"
button or Discord's ``/imagine`` (their next sentence is the request:
``Participant.imagine_until``), or a spoken trigger phrase configured for the room
(``interpretation.images.trigger``: "draw a red house" with trigger "draw"). The
request is transcribed in whatever language they speak, translated into the image
model's language and drawn; the picture goes to everyone with the transcript as its
caption (``ImageFrame``).
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NO_IMAGE_MODEL", "ImageParams", "ImageRateLimiter", "strip_trigger"]

#: Told to someone who asks for a picture where the profile draws nothing.
NO_IMAGE_MODEL = (
    "This server has no image model, so it cannot draw: the gpu and cpu profiles have one "
    "(image.engine: diffusers)."
)


@dataclass
class ImageParams:
    """Speech-to-image settings (``interpretation.images``).

    Attributes:
        trigger: Words that, said first, make the rest of the sentence a picture request
            (``None``: only the button and ``/imagine``); rooms may change it.
        per_user: Pictures one person may ask for per ``window_s``.
        window_s: The rate limit's window.
        request_s: How long after the button (or ``/imagine``) a sentence counts as the
            request.
        max_wait_s: Longest one picture may take before it is given up.
        limiter: The per-person rate limit, shared by every session made with these
            parameters (a person in two rooms has one allowance).
    """

    trigger: str | None = None
    per_user: int = 3
    window_s: float = 60.0
    request_s: float = 30.0
    max_wait_s: float = 600.0
    limiter: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = ImageRateLimiter(self.per_user, self.window_s)


def strip_trigger(text: str, trigger: str | None) -> str | None:
    """The request in ``text`` when it starts with ``trigger`` (case, punctuation and
    spacing aside), else ``None``: ``("Draw, a red house.", "draw")`` → ``"a red house"``."""
    if not trigger:
        return None
    words = re.findall(r"\w+", trigger.lower())
    if not words:
        return None
    pattern = r"^\W*" + r"\W+".join(re.escape(w) for w in words) + r"\b\W*(.*)$"
    match = re.match(pattern, text.strip(), flags=re.IGNORECASE | re.DOTALL)
    if match is None:
        return None
    rest = match.group(1).strip().rstrip(".!?。")
    return rest or None


class ImageRateLimiter:
    """At most ``per_user`` requests per ``window_s`` for each person (a sliding window)."""

    def __init__(self, per_user: int, window_s: float) -> None:
        self.per_user = per_user
        self.window_s = window_s
        self._asked: dict[str, deque[float]] = {}

    def allow(self, who: str, now: float | None = None) -> float:
        """Records a request of ``who``; returns 0 when allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        asked = self._asked.setdefault(who, deque())
        while asked and now - asked[0] >= self.window_s:
            asked.popleft()
        if len(asked) >= self.per_user:
            return self.window_s - (now - asked[0])
        asked.append(now)
        if len(self._asked) > 10000:
            for key in [k for k, v in self._asked.items() if not v or now - v[-1] >= self.window_s]:
                del self._asked[key]
        return 0.0
