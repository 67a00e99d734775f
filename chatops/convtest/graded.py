"""The expectations graded rather than matched: ``similar_to`` (a similarity threshold) and ``judge`` (a rubric).

``similar_to`` compares the replies with the expected text as sequences of words (difflib's ratio, case and
spacing ignored): deterministic, no model, so it runs offline too. ``judge`` asks a model to grade the replies
against a rubric; the :class:`Grader` gets that call injected (``chatops test`` passes the shared AI judge of
:mod:`chatops.ai.judge`, behind the shared on-disk answer cache), and without one a ``judge`` is skipped and
counted, never silently passed.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable

from chatops.convtest.cases import Expectation
from chatops.convtest.outcome import StepOutcome

# (rubric, what the user sent, the replies) -> (passed, reason)
JudgeCall = Callable[[str, str, str], tuple[bool, str]]


def similarity(a: str, b: str) -> float:
    """0..1: how alike two texts are as sequences of words (case and spacing ignored)."""
    return difflib.SequenceMatcher(None, a.casefold().split(), b.casefold().split(), autojunk=False).ratio()


class Grader:
    """Checks ``similar_to`` and ``judge``; ``skipped`` counts judges that ran without a model."""

    def __init__(self, judge: JudgeCall | None = None) -> None:
        self.judge = judge
        self.skipped = 0
        self._lock = threading.Lock()

    def check(self, expectation: Expectation, outcome: StepOutcome, *, sent: str = "") -> str | None:
        """``None`` when met (or a judge skipped), else ``key: why``."""
        if expectation.key == "similar_to":
            expected = expectation.value["text"]
            threshold = expectation.value["threshold"]
            score = max((similarity(text, expected) for text in [outcome.joined, *outcome.texts]), default=0.0)
            if score >= threshold:
                return None
            return f"similar_to: {score:.2f} < {threshold:g} to {expected!r}; replies {outcome.texts!r}"
        if self.judge is None:
            with self._lock:
                self.skipped += 1
            return None
        passed, reason = self.judge(expectation.value, sent, outcome.joined)
        return None if passed else f"judge: {reason}; replies {outcome.texts!r}"
