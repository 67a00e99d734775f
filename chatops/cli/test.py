"""``chatops test``: run the conversation tests of the bot (see docs/testing.md)."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from chatops.cli import output
from chatops.cli.choices import choice_metavar, choice_parser
from chatops.cli.replay import DEFAULT_CACHE_DIR  # one AI answer cache for replay and test

if TYPE_CHECKING:
    from chatops.ai.cache import CachedAIClient
    from chatops.config.bot_schema import BotDefinition
    from chatops.config.settings import Settings
    from chatops.convtest import CaseReport, Grader, RunReport
    from chatops.engine.turn import BotRuntime

DEFAULT_FOLDER = Path("tests/conversations")  # beside stages.yaml


class ReportFormat(StrEnum):
    text = "text"
    github = "github"


class AIMode(StrEnum):
    offline = "offline"
    openai = "openai"


def conversation_tests_command(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[PATHS]...",
            help="Test files or folders of them (default: tests/conversations beside stages.yaml).",
            show_default=False,
        ),
    ] = None,
    pattern: Annotated[
        str | None, typer.Option("-k", metavar="PATTERN", help="Only cases whose 'file::name' contains this.")
    ] = None,
    update: Annotated[
        bool, typer.Option("--update", help="Rewrite the exact 'reply:' expectations with what the bot says now.")
    ] = False,
    junit: Annotated[Path | None, typer.Option("--junit", metavar="FILE", help="Also write a JUnit XML report.")] = (
        None
    ),
    report_format: Annotated[
        ReportFormat,
        typer.Option(
            "--format",
            parser=choice_parser(ReportFormat),
            metavar=choice_metavar(ReportFormat),
            help="text, or github: also print GitHub Actions annotations at the failing lines.",
        ),
    ] = ReportFormat.text,
    ai: Annotated[
        AIMode,
        typer.Option(
            "--ai",
            parser=choice_parser(AIMode),
            metavar=choice_metavar(AIMode),
            help="offline: the local responder (no network); openai: the configured model (OPENAI_API_KEY).",
        ),
    ] = AIMode.offline,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="With --ai openai: ask the model even for requests already cached.")
    ] = False,
    cache_dir: Annotated[
        Path, typer.Option("--cache-dir", help="The AI answer cache (shared with chatops replay; commit it for CI).")
    ] = DEFAULT_CACHE_DIR,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=0,
            max=64,
            help="Cases run at the same time (0: one per CPU, up to 8).",
            show_default="0",
        ),
    ] = 0,
) -> None:
    """Run scripted conversations through the real webhook route, worker and engine, and check each step.

    Every case is a fresh conversation on a temporary database; nothing is sent to Meta. Exit 1 when a case fails.

    Example: chatops test ; chatops test tests/conversations/greeting.yaml -k hours --junit report.xml
    """
    from chatops.cli.app import settings_from
    from chatops.config.bot import load_bot
    from chatops.convtest import TestFileError, find_test_files, load_test_files, run_cases

    settings = settings_from(ctx, ai=ai.value)
    bot = load_bot(settings.stages, templates_dir=settings.templates)
    files = load_test_files(find_test_files(paths or [bot.path.parent / DEFAULT_FOLDER]), bot)
    cases = [case for test_file in files for case in test_file.cases]
    if pattern is not None:
        cases = [case for case in cases if pattern.casefold() in case.id.casefold()]
    if not cases:
        raise TestFileError([f"no cases{' match -k ' + repr(pattern) if pattern else ' found'}"])
    runtime, cached, grader = _ai_parts(settings, bot, ai, cache_dir=None if no_cache else cache_dir)
    printer = _Printer()
    report = run_cases(
        settings,
        bot,
        cases,
        jobs=jobs or min(8, os.cpu_count() or 1),
        update=update,
        grader=grader,
        runtime=runtime,
        on_case=printer.case,
    )
    for case in report.failed:
        printer.failure(case)
    if update:
        _apply_updates(report)
    if report_format is ReportFormat.github:
        from chatops.convtest.reports import github_annotations

        for line in github_annotations(report):
            output.stdout.file.write(line + "\n")
    if junit is not None:
        from chatops.convtest.reports import write_junit

        write_junit(report, junit)
    printer.summary(report, skipped_judges=grader.skipped, cached=cached)
    if report.failed:
        raise typer.Exit(1)


def _ai_parts(
    settings: Settings, bot: BotDefinition, ai: AIMode, *, cache_dir: Path | None
) -> tuple[BotRuntime | None, CachedAIClient | None, Grader]:
    """The runtime, its answer cache and the grader for ``--ai``.

    Offline: the runner's own runtime, no cache, and judges skipped (the offline responder cannot grade). With a
    model: the bot's runtime whose AI is wrapped in replay's :class:`CachedAIClient` (unless ``cache_dir`` is None),
    and ``judge:`` graded by replay's :func:`judge_answer` through that same client, so verdicts are cached too.
    """
    import dataclasses

    from chatops.ai.cache import CachedAIClient
    from chatops.ai.judge import judge_answer
    from chatops.convtest import Grader
    from chatops.engine.runtime import build_runtime
    from chatops.errors import AIError

    if ai is AIMode.offline:
        return None, None, Grader()
    runtime = build_runtime(settings, bot)
    cached = None if cache_dir is None else CachedAIClient(runtime.ai, cache_dir)
    if cached is not None:
        runtime = dataclasses.replace(runtime, ai=cached)
    client = runtime.ai

    def judge(rubric: str, sent: str, replies: str) -> tuple[bool, str]:
        try:
            verdict = judge_answer(client, rubric, user_text=sent, new_answer=replies, model=bot.ai.model)
        except AIError as exc:  # the model unreachable: this expectation fails, the run goes on
            return False, f"the judge could not grade: {exc.message}"
        return verdict.passed, verdict.reason

    return runtime, cached, Grader(judge=judge)


def _apply_updates(report: RunReport) -> None:
    from chatops.convtest.update import diff, rewrite

    by_file: dict[Path, list[CaseReport]] = {}
    for case in report.cases:
        if case.updates:
            by_file.setdefault(case.case.file.path, []).append(case)
    for path, cases in by_file.items():
        test_file = cases[0].case.file
        new_text = rewrite(test_file, [update for case in cases for update in case.updates])
        path.write_text(new_text, encoding="utf-8")
        output.stdout.file.write(diff(test_file, new_text))
    count = sum(len(case.updates) for case in report.cases)
    output.info(
        f"updated {count} repl{'y' if count == 1 else 'ies'} in {len(by_file)} file(s)"
        if count
        else "nothing to update",
        style="dim",
    )


class _Printer:
    """One line per case as it ends, then each failure with what happened next to what was expected."""

    def case(self, case: CaseReport) -> None:
        mark, style = ("PASS", "green") if case.passed else ("FAIL", "bold red")
        line = Text.assemble((f"{mark} ", style), case.case.id, (f"  {case.seconds * 1000:.0f} ms", "dim"))
        output.stdout.print(line)

    def failure(self, case: CaseReport) -> None:
        from chatops.convtest.reports import failure_lines

        output.stdout.print(Text(f"\n── {case.case.id}", style="bold red"))
        for where, message in failure_lines(case):
            output.stdout.print(Text.assemble((f"{where}: ", "bold"), message))
        if case.error is not None or not case.steps:
            return
        last = case.steps[-1]
        outcome = last.outcome
        output.info(f"  after step {last.step.number} ({last.step.describe()}):", style="dim")
        output.info(f"    stage: {outcome.stage}   mode: {outcome.mode}   state: {outcome.state}")
        for number, reply in enumerate(outcome.replies, start=1):
            buttons = f"  [{' | '.join(reply.buttons)}]" if reply.buttons else ""
            template = f"  (template {reply.template})" if reply.template else ""
            unsent = f"  ({reply.status}: {reply.error})" if reply.status != "sent" else ""
            output.info(f"    reply {number}: {reply.text!r}{buttons}{template}{unsent}")
        for error in outcome.errors:
            output.info(f"    error: {error}", style="yellow")

    def summary(self, report: RunReport, *, skipped_judges: int, cached: CachedAIClient | None) -> None:
        failed = len(report.failed)
        passed = len(report.cases) - failed
        steps = sum(len(case.steps) for case in report.cases)
        text = f"\n{passed} passed, {failed} failed ({steps} steps) in {report.seconds:.2f}s"
        if skipped_judges:
            text += f"; {skipped_judges} judge expectation(s) skipped (offline AI: use --ai openai)"
        if cached is not None:
            text += f"; AI cache: {cached.hits} hits, {cached.misses} misses ({cached.directory})"
        output.stdout.print(Text(text, style="bold red" if failed else "bold green"))
