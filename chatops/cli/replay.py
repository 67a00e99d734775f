"""``chatops replay``: re-run stored conversations against a candidate bot definition and report what changed."""

from __future__ import annotations

import json
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from chatops.cli import output
from chatops.cli.choices import choice_metavar, choice_parser
from chatops.cli.export import (
    ChannelFilter,
    ConversationIds,
    Limit,
    Sample,
    Seed,
    Since,
    StageFilter,
    Until,
    selection_from,
)

DEFAULT_CACHE_DIR = Path(".chatops/ai-cache")
DEFAULT_BASELINE_DIR = Path(".chatops/baselines")


class ReplayMode(StrEnum):
    """How turns see their context."""

    independent = "independent"
    chained = "chained"


class ReplayFormat(StrEnum):
    """What ``replay`` prints on stdout."""

    text = "text"
    json = "json"
    github = "github"


def replay_command(
    ctx: typer.Context,
    corpus: Annotated[
        Path | None, typer.Option("--from", help="Replay this corpus file (chatops export) instead of the database.")
    ] = None,
    templates: Annotated[Path | None, typer.Option("--templates", help="The candidate's templates folder.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Override ai.model of the candidate.")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Override a stages.yaml key: KEY=VALUE (repeatable).")
    ] = None,
    mode: Annotated[
        ReplayMode,
        typer.Option(
            "--mode",
            parser=choice_parser(ReplayMode),
            metavar=choice_metavar(ReplayMode),
            help="independent: each turn sees the recorded context; chained: the candidate's own replies and "
            "state carry forward.",
        ),
    ] = ReplayMode.independent,
    live_providers: Annotated[
        bool, typer.Option("--live-providers", help="Call the variable providers again instead of reusing values.")
    ] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256, help="Turns in flight.")] = 8,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask the AI even for requests already cached.")] = False,
    cache_dir: Annotated[Path, typer.Option("--cache-dir", help="The AI response cache.")] = DEFAULT_CACHE_DIR,
    judge: Annotated[
        str | None, typer.Option("--judge", help="Grade each changed turn against this rubric with the model.")
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")] = None,
    output_format: Annotated[
        ReplayFormat,
        typer.Option(
            "--format",
            parser=choice_parser(ReplayFormat),
            metavar=choice_metavar(ReplayFormat),
            help="text (tables), json (the report on stdout) or github (annotations + step summary).",
        ),
    ] = ReplayFormat.text,
    save_baseline: Annotated[str | None, typer.Option("--save-baseline", help="Store this run as NAME.")] = None,
    against: Annotated[
        str | None, typer.Option("--against", help="Compare with baseline NAME instead of the recording.")
    ] = None,
    baseline_dir: Annotated[Path, typer.Option("--baseline-dir", help="Where baselines live.")] = DEFAULT_BASELINE_DIR,
    fail_under_similarity: Annotated[
        float | None, typer.Option("--fail-under-similarity", min=0, max=1, help="Exit 1 if mean similarity < X.")
    ] = None,
    max_changed_transitions: Annotated[
        int | None, typer.Option("--max-changed-transitions", min=0, help="Exit 1 if more transitions changed.")
    ] = None,
    max_judged_failures: Annotated[
        int | None, typer.Option("--max-judged-failures", min=0, help="Exit 1 if more turns are judged failing.")
    ] = None,
    fail_on_error: Annotated[bool, typer.Option("--fail-on-error", help="Exit 1 if any turn errored.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    since: Since = None,
    until: Until = None,
    conversation: ConversationIds = None,
    stage: StageFilter = None,
    channel: ChannelFilter = None,
    limit: Limit = None,
    sample: Sample = None,
    seed: Seed = 0,
) -> None:
    """Re-run stored conversations against the bot definition (--stages) and report what changed.

    Read-only: nothing in the database changes and nothing is sent. Exit 1 when a gate fails (the reason is
    printed). docs/replay.md explains modes, the cache, the report formats and the gates.

    Example: chatops replay --stages new/stages.yaml --from corpus.jsonl --report replay.html --fail-on-error
    """
    from chatops.ai.cache import CachedAIClient
    from chatops.ai.factory import make_ai_client_from_settings
    from chatops.ai.protocol import AIClient
    from chatops.cli.app import database_engine, settings_from
    from chatops.replay.candidate import load_candidate
    from chatops.replay.corpus import read_corpus, read_database
    from chatops.replay.gates import Gates
    from chatops.replay.report import format_github
    from chatops.replay.session import ReplayOptions, run_replay
    from chatops.replay.terminal import print_summary

    settings = settings_from(ctx)
    bot = load_candidate(settings.stages, templates_dir=templates or settings.templates, model=model, sets=sets or ())
    if corpus is not None:
        conversations = read_corpus(corpus)
    else:
        selection = selection_from(since, until, conversation, stage, channel, limit, sample, seed)
        engine = database_engine(ctx, settings=settings)
        try:
            conversations = read_database(engine, selection)
        finally:
            engine.dispose()
    inner = make_ai_client_from_settings(settings, timeout=bot.ai.timeout)
    cached = None if no_cache else CachedAIClient(inner, cache_dir)
    ai: AIClient = cached or inner
    options = ReplayOptions(
        mode="chained" if mode is ReplayMode.chained else "independent",
        concurrency=concurrency,
        live_providers=live_providers,
        against=against,
        save_baseline=save_baseline,
        baseline_dir=baseline_dir,
        judge_rubric=judge,
        gates=Gates(
            fail_under_similarity=fail_under_similarity,
            max_changed_transitions=max_changed_transitions,
            max_judged_failures=max_judged_failures,
            fail_on_error=fail_on_error,
        ),
        prices=settings.ai_prices,
    )
    total = sum(1 for c in conversations for t in c.turns if t.replayable)
    stop = threading.Event()

    def counts() -> dict[str, int]:
        return {"hits": cached.hits, "misses": cached.misses} if cached else {"hits": 0, "misses": 0}

    if progress and output.stderr.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[changes]}"))
        with Progress(*columns, TimeRemainingColumn(), console=output.stderr, transient=True) as bar:
            task = bar.add_task("replay", total=total, changes="")
            tally = {"changed": 0}

            def advance(turn: object) -> None:
                from chatops.replay.runner import ReplayedTurn

                assert isinstance(turn, ReplayedTurn)
                if turn.new.replies != turn.recorded.replies or turn.new.error:
                    tally["changed"] += 1
                bar.update(task, advance=1, changes=f"{tally['changed']} differ")

            result = run_replay(conversations, bot, ai, options, on_turn=advance, stop=stop, cache_counts=counts)
    else:
        result = run_replay(conversations, bot, ai, options, stop=stop, cache_counts=counts)
    if result["run"]["interrupted"]:
        output.warning(f"interrupted: the report covers the {len(result['turns'])} turns that finished")
    if json_out is not None:
        json_out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    if report is not None:
        from chatops.replay.html import render_html

        report.write_text(render_html(result), encoding="utf-8")
    if output_format is ReplayFormat.json:
        output.print_json(result)
    elif output_format is ReplayFormat.github:
        typer.echo(format_github(result), nl=False)
    else:
        print_summary(output.stdout, result)
    for reason in result["gates"]["failed"]:
        output.error(f"gate failed: {reason}")
    raise typer.Exit(1 if result["gates"]["failed"] else 0)
