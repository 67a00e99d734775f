"""An AI judge: the configured model grades an answer against a rubric, as strict JSON (pass/fail + reason).

``replay --judge`` grades each changed turn; ``chatops test`` (issue 16) reuses :func:`judge_answer`. The call
goes through the ordinary :class:`AIClient` ``extract`` (OpenAI structured outputs, ``strict: true``) with two
fields, ``verdict`` (``pass`` | ``fail``) and ``reason``, so it gets the client's retries and timeouts, and a
:class:`~chatops.ai.cache.CachedAIClient` caches verdicts like any other answer. An answer that is not the
expected JSON (a model ignoring the schema) is a failing verdict saying so, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatops.ai.protocol import AIClient
from chatops.config.memory_schema import ExtractField

JUDGE_FIELDS = {
    "verdict": ExtractField(
        type="enum", choices=("pass", "fail"), description="pass when the new answer meets the rubric, else fail"
    ),
    "reason": ExtractField(type="string", description="one short sentence saying why"),
}
JUDGE_INSTRUCTIONS = (
    "You grade a chatbot's answer against a rubric. Read the user's message, the answer the bot used to give "
    "and its new answer. Decide whether the NEW answer meets the rubric (the old one is context only). "
    "Rubric:\n{rubric}"
)


@dataclass(frozen=True)
class JudgeVerdict:
    """``passed`` and a one-line ``reason``; ``tokens`` the judge call used."""

    passed: bool
    reason: str
    tokens: int = 0


def judge_answer(
    ai: AIClient, rubric: str, *, user_text: str, new_answer: str, old_answer: str | None = None, model: str
) -> JudgeVerdict:
    """Grade ``new_answer`` to ``user_text`` against ``rubric`` with ``model``.

    Raises AIError when the model cannot be reached after the client's retries.
    """
    from chatops.ai.prompt import ChatRequest

    parts = [f"User's message:\n{user_text}"]
    if old_answer is not None:
        parts.append(f"Old answer:\n{old_answer}")
    parts.append(f"New answer:\n{new_answer}")
    request = ChatRequest(
        system_prompt=JUDGE_INSTRUCTIONS.format(rubric=rubric.strip()),
        user_text="\n\n".join(parts),
        model=model,
        temperature=0.0,
        max_tokens=200,
    )
    result = ai.extract(request, JUDGE_FIELDS)
    verdict = result.values.get("verdict")
    reason = " ".join(str(result.values.get("reason") or "").split())[:300]
    if verdict not in ("pass", "fail"):
        return JudgeVerdict(False, f"the judge gave no verdict (answer: {(result.raw or '')[:120]!r})")
    return JudgeVerdict(verdict == "pass", reason or verdict, result.usage.total_tokens)
