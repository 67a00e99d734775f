"""``/api/v1/bot`` (definition, template preview, reload) and ``/api/v1/stats``."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_openapi3.blueprint import APIBlueprint

from chatops.db.stats import collect_stats
from chatops.engine.reload import BotReloadRejected, reload_bot
from chatops.templating.store import TemplateStore
from chatops.web.api import RELOAD_WATCH, models
from chatops.web.api.routes import operation
from chatops.web.auth import ApiError, Role, audit_details, current_caller
from chatops.web.state import web_state

api = APIBlueprint("bot", __name__)


@operation(api, "get", "/bot", Role.VIEWER, answer=models.BotInfo)
def bot_view() -> Response:
    """The loaded bot definition: stages, where they lead, and the template versions."""
    bot = web_state(current_app).bot
    store = TemplateStore(bot.templates_dir)
    stages = [
        models.StageInfo(
            name=name, reply=stage.reply, prompt=stage.prompt, handoff=stage.handoff, targets=list(stage.targets)
        )
        for name, stage in bot.stages.items()
    ]
    templates = {name: store.version(name) for name in bot.template_files}
    info = models.BotInfo(
        name=bot.bot.name, start=bot.bot.start, version=bot.version, stages=stages, templates=templates
    )
    return jsonify(info.model_dump(mode="json"))


@operation(api, "post", "/bot/preview", Role.VIEWER, answer=models.PreviewAnswer)
def preview_view(body: models.PreviewRequest) -> Response:
    """Render one of the bot's templates with sample variables (strict: an undefined variable is an error)."""
    bot = web_state(current_app).bot
    if body.template not in bot.template_files:  # never a path of the caller's choosing ("/" was a 500)
        raise ApiError(
            404,
            "not_found",
            f"no template {body.template!r} in this bot",
            hint=f"one of: {', '.join(bot.template_files)}",
        )
    rendered = TemplateStore(bot.templates_dir).render(body.template, {**bot.variables, **body.variables})
    answer = models.PreviewAnswer(template=rendered.template, version=rendered.version, text=rendered.text)
    return jsonify(answer.model_dump(mode="json"))


@operation(api, "post", "/bot/reload", Role.ADMIN, answer=models.ReloadAnswer, conflicts=True)
def reload_view() -> Response:
    """Reload stages.yaml and the templates in every process, after linting them.

    Any lint error rejects the reload (422 `bot_invalid` with the linter's messages in `fields`) and the running
    definition stays. Every process (web and workers) picks an accepted reload up within seconds.
    """
    state = web_state(current_app)
    try:
        done = reload_bot(state.db, state.settings, actor=current_caller().actor, now=state.clock())
    except BotReloadRejected as exc:
        audit_details(problems=exc.problems[:20])
        raise ApiError(422, "bot_invalid", f"{exc.message}: {exc.problems[0]}", hint=exc.hint) from None
    state.bot = done.bot
    current_app.extensions[RELOAD_WATCH].seen = done.reload_id  # this process has it already
    audit_details(version=done.bot.version)
    return jsonify(models.ReloadAnswer(reload_id=done.reload_id, version=done.bot.version).model_dump(mode="json"))


@operation(api, "get", "/stats", Role.VIEWER, answer=models.Stats)
def stats_view(query: models.StatsQuery) -> Response:
    """Messages in/out, turns, AI tokens and latency per day; failures by Graph error code; people waiting."""
    state = web_state(current_app)
    stats = models.Stats.model_validate(collect_stats(state.db, now=state.clock(), days=query.days))
    return jsonify(stats.model_dump(mode="json"))
