"""Benchmark 3, lint: ``chatops lint-templates`` on a generated bot of 1,000 templates and 200 stages.

Baseline: a bare script that only parses the same templates with Jinja2 (bench/parse_templates.py). Both run as
fresh processes (so both include the interpreter's start-up; ``startup`` reports the CLI's own), interleaved,
median of the rounds. Target: at most 3× the bare parse.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.harness import Context, standalone
from bench.results import Row, Skip, Target
from bench.stats import interleave, median

NAME = "lint"
TITLE = "lint-templates on 1,000 templates / 200 stages"
ORDER = 20

STAGES = 200
TEMPLATES = 1000
TARGET_RATIO = 3.0


def run(ctx: Context) -> list[Row]:
    from bench.bots import write_lint_bot
    from bench.processes import time_command

    if not ctx.help_text("lint-templates"):
        raise Skip("`chatops lint-templates` does not exist yet")
    folder = ctx.work_dir / "lint-bot"
    write_lint_bot(folder, stages=STAGES, templates=TEMPLATES)
    env = ctx.env({"NO_COLOR": "1", "TERM": "dumb"})
    lint = [*ctx.chatops, "lint-templates"]
    parse = [ctx.python, str(Path(__file__).with_name("parse_templates.py")), str(folder / "templates")]

    # One checked run first: a figure for a linter that found problems (or crashed) would measure the wrong thing.
    first = subprocess.run(lint, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)
    if first.returncode != 0:
        tail = " ".join((first.stdout + first.stderr).split())[-400:]
        return [
            Row(
                benchmark=NAME,
                figure=f"`chatops lint-templates` ({TEMPLATES:,} templates, {STAGES} stages)",
                invalid=f"lint-templates exited {first.returncode} on the generated bot: {tail}",
            )
        ]
    rounds = ctx.rounds(7, 3)
    times = interleave(
        {
            "parse": lambda: time_command(parse, cwd=folder, env=env),
            "lint": lambda: time_command(lint, cwd=folder, env=env),
        },
        rounds=rounds,
    )
    return [
        Row(
            benchmark=NAME,
            figure=f"`chatops lint-templates` ({TEMPLATES:,} templates, {STAGES} stages)",
            value=median(times["lint"]),
            unit="s",
            baseline=median(times["parse"]),
            baseline_label="bare Jinja2 parse",
            target=Target("<=", TARGET_RATIO),
            note=f"median of {rounds} interleaved runs, both as fresh processes",
        )
    ]


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
