"""``chatops lint-templates``: check stages.yaml and every template without rendering; for CI and editors."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from chatops.cli import output
from chatops.cli.choices import choice_metavar, choice_parser


class LintFormat(StrEnum):
    """Output formats of ``lint-templates``."""

    text = "text"
    json = "json"
    github = "github"


class GraphFormat(StrEnum):
    """Formats of ``lint-templates --graph``."""

    mermaid = "mermaid"
    dot = "dot"


def lint_templates_command(
    ctx: typer.Context,
    stages: Annotated[
        Path | None,
        typer.Argument(
            metavar="STAGES",
            help="The bot definition (default: --stages, $CHATOPS_STAGES or stages.yaml).",
            show_default=False,
        ),
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option("--templates", help="Templates folder (default: $CHATOPS_TEMPLATES or templates/ beside it)."),
    ] = None,
    output_format: Annotated[
        LintFormat,
        typer.Option(
            "--format",
            parser=choice_parser(LintFormat),
            metavar=choice_metavar(LintFormat),
            help="text, json (a list of findings) or github (annotations).",
        ),
    ] = LintFormat.text,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on warnings too.")] = False,
    graph: Annotated[
        GraphFormat | None,
        typer.Option(
            "--graph",
            parser=choice_parser(GraphFormat),
            metavar=choice_metavar(GraphFormat),
            help="Print the stage graph (with what each edge sets) instead of the findings.",
        ),
    ] = None,
) -> None:
    """Check stages.yaml and its templates: syntax, undefined variables per stage, the stage graph.

    Exit 0 when clean, 1 on errors (or warnings with --strict), 2 on usage errors. Rules: docs/lint-rules.md.

    Example: chatops lint-templates --format github   (annotations on the pull request, in a GitHub workflow)

    Example: chatops lint-templates --graph mermaid   (the stage graph, for docs or a pull request)
    """
    from chatops.cli.app import settings_from
    from chatops.config.bot import display_path
    from chatops.templating.lint import format_github, format_json, format_text, lint_bot

    settings = settings_from(ctx, uses=("stages", "templates", "log_level"), templates=templates)
    # The argument wins over --stages/CHATOPS_STAGES; templates then default to the folder beside it.
    path = stages if stages is not None else settings.stages
    folder = settings.templates if settings.templates is not None else path.parent / "templates"
    if not path.is_file():
        output.error(
            f"{display_path(path)} does not exist", hint="pass the path of your stages.yaml, or set CHATOPS_STAGES"
        )
        raise typer.Exit(2)
    if graph is not None:
        from chatops.config.bot import load_bot
        from chatops.templating.graph import stage_graph

        typer.echo(stage_graph(load_bot(path, templates_dir=folder), graph.value), nl=False)
        raise typer.Exit(0)
    report = lint_bot(path, templates_dir=folder)
    render = {LintFormat.text: format_text, LintFormat.json: format_json, LintFormat.github: format_github}[
        output_format
    ]
    typer.echo(render(report), nl=False)
    raise typer.Exit(report.exit_code(strict=strict))
