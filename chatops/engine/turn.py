"""One turn of conversation: from a conversation and its new message(s) to replies, a new state and a trace.

``handle_turn`` is the one code path that ``serve``, ``worker``, ``simulate`` and ``replay`` share. It does no
database I/O: the worker loads the conversation and commits the :class:`TurnResult` in one transaction.
Failures of providers, templates, the AI or memory never escape: the stage's ``on_error`` template answers, the
error is recorded on the turn, and the conversation stays where it was (its stage and its state).
Text the turn did not write itself — template output, the AI's answer and intent — is cleaned where it enters
(:func:`chatops.text.clean_text`; provider values are cleaned by :class:`~chatops.engine.variables.VariableSource`),
so the turn can always be stored and sent.

Memory (``conversations.state``, see :mod:`chatops.engine.memory`): a turn starts from the conversation's state
(empty after a session timeout); when a transition is taken the target stage's ``clear:`` applies, then the
transition's ``set:`` (with ``match``, this turn's regex groups). An ``extract:`` stage then lets the AI fill its
fields (:mod:`chatops.engine.forms`) and asks until they are valid. Whenever the stage answers, its providers run
(they read the state as it is at that point: ``ProviderContext.state``), then its ``set:`` (with their variables).
The turn records the state before and after, and the extraction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from chatops.ai.prompt import ChatRequest
from chatops.ai.protocol import AIClient, ChatResult
from chatops.channels.events import Button, InboundMessage, OutboundMessage
from chatops.config.bot_schema import BotDefinition, Condition, Stage
from chatops.db.inbox import Conversation, ConversationChange, PastTurn, TurnRecord
from chatops.engine import forms, memory
from chatops.engine.stages import decide
from chatops.engine.variables import VariableSource
from chatops.engine.window import with_window_params
from chatops.errors import AIError, ProviderError, StateError, TemplateError
from chatops.templating.providers import variables_json
from chatops.templating.split import CHANNEL_TEXT_LIMITS, split_message
from chatops.templating.store import TemplateStore
from chatops.text import clean_text, clean_value

log = logging.getLogger(__name__)

FALLBACK_ERROR_TEXT = "Sorry, something went wrong on our side. Please try again in a moment."


@dataclass(frozen=True)
class TurnResult:
    """What a turn decided: the replies to send, the conversation's new state, and the full trace."""

    replies: tuple[OutboundMessage, ...]
    change: ConversationChange
    record: TurnRecord


@dataclass
class BotRuntime:
    """Everything a turn needs besides the conversation: the definition, templates, variables and the AI."""

    bot: BotDefinition
    templates: TemplateStore
    variables: VariableSource
    ai: AIClient


@dataclass
class _Trace:
    """What the turn did, filled in as it goes (becomes the TurnRecord)."""

    template_versions: dict[str, str] = field(default_factory=dict)
    prompt: list[dict[str, Any]] | None = None
    model: str | None = None
    parameters: dict[str, Any] | None = None
    intent: str | None = None
    ai_response: str | None = None
    usage: dict[str, int] | None = None
    latency_ms: float = 0.0
    errors: list[str] = field(default_factory=list)
    extraction: dict[str, Any] | None = None

    def ai_call(self, result: Any) -> None:
        self.prompt = clean_value(list(result.request_messages))
        self.model = clean_text(result.model) if isinstance(result.model, str) else result.model
        self.latency_ms += result.latency_ms
        usage = asdict(result.usage)
        self.usage = usage if self.usage is None else {k: self.usage.get(k, 0) + v for k, v in usage.items()}


def user_text_of(messages: Sequence[InboundMessage]) -> str:
    """The text the AI and the history see: the messages' texts, or a short description of non-text input."""
    parts = [message.text or _describe(message) for message in messages]
    return "\n".join(part for part in parts if part)


def _describe(message: InboundMessage) -> str:
    payload = message.payload
    if message.kind == "location":
        return f"[location {payload.get('latitude')}, {payload.get('longitude')}]"
    if message.kind in ("image", "audio", "video", "document", "sticker"):
        return f"[{message.kind}]"
    return f"[{message.kind}]"


def handle_turn(
    runtime: BotRuntime,
    conversation: Conversation,
    messages: Sequence[InboundMessage],
    *,
    history: Sequence[PastTurn],
    now: datetime,
) -> TurnResult:
    """Decide the stage, fill the variables, render or ask the AI, and return replies, state and trace."""
    bot = runtime.bot
    message = messages[-1]
    user_text = user_text_of(messages)
    trace = _Trace()
    restarted = _session_expired(bot, conversation, history, now)
    if restarted:
        history = ()
    session_started_at = now if restarted else conversation.session_started_at
    current = None if restarted else conversation.stage
    origin = current or bot.bot.start  # a new (or restarted) conversation is in `start`

    def classify(intents: Sequence[str]) -> str | None:
        request = _chat_request(runtime, bot.stages[origin], "", user_text, history, trace)
        result = runtime.ai.classify(request, intents)
        trace.ai_call(result)
        trace.intent = clean_text(result.intent) if result.intent is not None else None
        return trace.intent

    state_before: dict[str, Any] = {} if restarted else dict(conversation.state)
    state = state_before
    base: dict[str, Any] = {}

    def base_variables() -> dict[str, Any]:
        """Built-ins and static variables, no providers: what conditions and transition ``set:`` see."""
        if not base:
            context = runtime.variables.context(conversation, message, now=now, history=history)
            base.update(runtime.variables.runner.fetch_variables(context, names=()).variables)
        return base

    def check(condition: Condition) -> bool:
        return memory.condition_holds(condition, state, {**base_variables(), "state": memory.visible(state)})

    target = origin
    variables: dict[str, Any] = {}
    try:
        decision = decide(origin, bot.stages[origin], message, classify=classify, check=check)
        target = decision.stage
        stage = bot.stages[target]
        match = memory.match_namespace(memory.regex_groups(decision.groups))
        if decision.transition is not None:
            state = memory.cleared(state, stage.clear)
            index = bot.stages[origin].transitions.index(decision.transition)
            state = _remember(
                bot,
                decision.transition.assign,
                {**base_variables(), "state": memory.visible(state), "match": match},
                state,
                ("stages", origin, "transitions", index, "set"),
            )
        form: forms.FormStep | None = None
        if stage.extract:
            entered = decision.transition is not None
            form = _fill_form(runtime, target, stage, state, message, user_text, history, trace, entered=entered)
            state = form.state
            if form.exhausted and stage.on_invalid is not None:
                target, form = stage.on_invalid, None
                stage = bot.stages[target]
                state = memory.cleared(state, stage.clear)
        asking = form is not None and form.ask is not None
        variables = runtime.variables.fetch(
            conversation,
            message,
            stage_name=target,
            stage=stage,
            now=now,
            history=history,
            state=state,
            templates=_ask_templates(stage, form) if asking else None,
        )
        variables |= {"state": memory.visible(state), "match": match}
        if form is not None and form.ask is not None:
            text = _ask(runtime, stage, form, variables, trace)
            replies = _compose(bot, stage, text, conversation.channel, buttons=forms.choice_buttons(stage, form))
            stage_after = target  # the form stays until its required fields are valid
        else:
            if stage.assign:  # a form's set: runs once it is complete, so it may read every required field
                state = _remember(bot, stage.assign, variables, state, ("stages", target, "set"))
                variables["state"] = memory.visible(state)
            text = _answer(runtime, stage, variables, user_text, history, trace)
            replies = _compose(bot, stage, text, conversation.channel)
            stage_after = stage.next or target
        mode = "human" if stage.handoff else "bot"
    except (AIError, ProviderError, TemplateError, StateError) as exc:
        log.warning("turn of conversation %s failed at stage %s: %s", conversation.id, target, exc)
        trace.errors.append(f"{type(exc).__name__}: {exc}")
        text = _error_reply(runtime, conversation, message, current, target, now, trace, state_before)
        replies = _compose(bot, None, text, conversation.channel)
        stage_after = origin
        mode = "bot"
        state = state_before
    replies = with_window_params(bot, replies, base_variables, channel=conversation.channel)

    record = TurnRecord(
        started_at=now,
        finished_at=now,
        stage_before=None if restarted else conversation.stage,
        stage_after=stage_after,
        stage_answered=None if trace.errors else target,
        user_text=user_text,
        variables=variables_json(variables),
        prompt=trace.prompt,
        model=trace.model,
        parameters=trace.parameters,
        intent=trace.intent,
        ai_response=trace.ai_response,
        usage=trace.usage,
        latency_ms=round(trace.latency_ms, 3) if trace.model else None,
        template_versions=trace.template_versions,
        bot_version=bot.version,
        replies=[reply.to_json() for reply in replies],
        error="; ".join(trace.errors) or None,
        state_before=state_before,
        state_after=state,
        extraction=trace.extraction,
    )
    change = ConversationChange(
        stage=stage_after,
        state=state,
        mode=mode,
        session_started_at=session_started_at,
    )
    return TurnResult(tuple(replies), change, record)


def _remember(
    bot: BotDefinition,
    assign: dict[str, Any],
    variables: dict[str, Any],
    state: dict[str, Any],
    path: tuple[str | int, ...],
) -> dict[str, Any]:
    """``state`` after a ``set:`` at ``path`` in stages.yaml (errors name that place)."""
    if not assign:
        return state

    def where(name: str | None) -> str:
        full = path if name is None else (*path, name)
        location = bot.location(full)
        return str(location) if location is not None else ".".join(map(str, full))

    return memory.apply(state, memory.evaluate_set(assign, variables, where=where), where=where(None))


def _fill_form(
    runtime: BotRuntime,
    name: str,
    stage: Stage,
    state: dict[str, Any],
    message: InboundMessage,
    user_text: str,
    history: Sequence[PastTurn],
    trace: _Trace,
    *,
    entered: bool,
) -> forms.FormStep:
    """Let the AI propose the stage's fields (a tapped choice needs no AI), validate them into the state."""
    asking = forms.asking(state, name)
    proposal = forms.button_proposal(stage, message.payload.get("button"))
    extraction: dict[str, Any] = {"asking": asking}
    if not proposal and (message.text or "").strip():
        request = _chat_request(runtime, stage, "", user_text, history, trace)
        result = runtime.ai.extract(request, stage.extract, asking=asking)
        trace.ai_call(result)
        proposal = result.values
        extraction |= {"request": result.request_messages, "raw": result.raw, "model": result.model}
    location = runtime.bot.location(("stages", name, "extract"))
    where = str(location) if location is not None else f"stage {name}"
    outcome = forms.step(name, stage, state, proposal, entered=entered, where=where)
    trace.extraction = clean_value(
        extraction
        | {
            "proposed": proposal,
            "errors": outcome.errors,
            "asked": outcome.ask,
            "attempts": outcome.attempts,
            "exhausted": outcome.exhausted,
        }
    )
    return outcome


def _ask(runtime: BotRuntime, stage: Stage, form: forms.FormStep, variables: dict[str, Any], trace: _Trace) -> str:
    """The question for the form's next field: its ``ask:`` template (which sees ``form``), or a plain one."""
    template = stage.ask_for(form.ask or "")
    if template is None:
        return forms.default_question(stage, form)
    return _render(runtime, template, variables | {"form": forms.form_namespace(stage, form)}, trace)


def _ask_templates(stage: Stage, form: forms.FormStep | None) -> tuple[str, ...]:
    """The templates a form still asking renders: only their providers run (the reply's may need a field the form
    is still asking for)."""
    template = stage.ask_for(form.ask or "") if form is not None else None
    return (template,) if template is not None else ()


def _session_expired(
    bot: BotDefinition, conversation: Conversation, history: Sequence[PastTurn], now: datetime
) -> bool:
    if conversation.stage is None or conversation.stage not in bot.stages:
        return True
    last = history[-1].finished_at if history else None
    return last is not None and now - last > bot.bot.session_timeout


def _answer(
    runtime: BotRuntime,
    stage: Stage,
    variables: dict[str, Any],
    user_text: str,
    history: Sequence[PastTurn],
    trace: _Trace,
) -> str:
    if stage.reply is not None:
        return _render(runtime, stage.reply, variables, trace)
    if stage.prompt is not None:
        system_prompt = _render(runtime, stage.prompt, variables, trace)
        request = _chat_request(runtime, stage, system_prompt, user_text, history, trace)
        result: ChatResult = runtime.ai.reply(request)
        trace.ai_call(result)
        trace.ai_response = clean_text(result.text)
        return trace.ai_response
    return ""


def _render(runtime: BotRuntime, name: str, variables: dict[str, Any], trace: _Trace) -> str:
    rendered = runtime.templates.render(name, variables)
    trace.template_versions[name] = rendered.version
    return clean_text(rendered.text)


def _chat_request(
    runtime: BotRuntime,
    stage: Stage,
    system_prompt: str,
    user_text: str,
    history: Sequence[PastTurn],
    trace: _Trace,
) -> ChatRequest:
    ai = runtime.bot.ai
    overrides = stage.ai
    model = (overrides.model if overrides else None) or ai.model
    temperature = ai.temperature if overrides is None or overrides.temperature is None else overrides.temperature
    max_tokens = (overrides.max_tokens if overrides else None) or ai.max_tokens
    window = ai.history if overrides is None or overrides.history is None else overrides.history
    pairs: list[tuple[str, str]] = []
    for past in list(history)[-window:] if window else []:
        if past.user_text:
            pairs.append(("user", past.user_text))
        if past.replies:
            pairs.append(("assistant", "\n\n".join(past.replies)))
    trace.parameters = {"temperature": temperature, "max_tokens": max_tokens, "history": window}
    return ChatRequest(
        system_prompt=system_prompt,
        user_text=user_text,
        history=pairs,
        model=model,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=ai.timeout,
    )


def _compose(
    bot: BotDefinition, stage: Stage | None, text: str, channel: str, *, buttons: tuple[Button, ...] | None = None
) -> list[OutboundMessage]:
    """The text split to the channel's cap (at most ``max_replies`` messages); buttons (the stage's unless given)
    go on the last one."""
    parts = split_message(text, limit=CHANNEL_TEXT_LIMITS[channel], max_parts=bot.bot.max_replies) if text else []
    if buttons is None:
        buttons = tuple(Button(b.id, b.title, b.description) for b in stage.buttons) if stage else ()
    if buttons and not parts:
        parts = ["Please choose:"]
    replies = [OutboundMessage(text=part) for part in parts]
    if replies and stage is not None and buttons:
        replies[-1] = OutboundMessage(text=replies[-1].text, buttons=buttons, list_button=stage.list_button)
    return replies


def _error_reply(
    runtime: BotRuntime,
    conversation: Conversation,
    message: InboundMessage,
    current: str | None,
    target: str,
    now: datetime,
    trace: _Trace,
    state: dict[str, Any],
) -> str:
    """The ``on_error`` template of the target stage (else the current one), or a fixed apology. It sees the
    state as it was before the turn."""
    for name in (target, current):
        stage = runtime.bot.stages.get(name) if name else None
        if name is None or stage is None or stage.on_error is None:
            continue
        try:
            variables = runtime.variables.fetch(
                conversation, message, stage_name=name, stage=stage, now=now, templates=(stage.on_error,), state=state
            )
            variables |= {"state": memory.visible(state), "match": memory.match_namespace({})}
            return _render(runtime, stage.on_error, variables, trace)
        except (ProviderError, TemplateError) as exc:
            trace.errors.append(f"on_error {stage.on_error}: {exc}")
    return FALLBACK_ERROR_TEXT
