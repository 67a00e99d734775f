"""Benchmark 4, start-up: ``chatops --help`` and ``chatops lint-templates`` on the example bot vs ``python -c pass``.

Each command runs to completion in a fresh process, interleaved round by round with the bare interpreter, and the
medians are compared. The figure that matters is the *extra* start-up over the interpreter itself: the CLI imports
heavy libraries (SQLAlchemy, Flask, OpenAI) only inside the commands that use them, so ``--help`` should cost
little more than Typer. (hyperfine would do the same job, but cannot interleave different commands.)
"""

from __future__ import annotations

from bench.harness import Context, standalone
from bench.results import Row, Target
from bench.stats import interleave, median

NAME = "startup"
TITLE = "CLI start-up"
ORDER = 10

HELP_EXTRA_TARGET_S = 0.3  # "aim under 0.3 s of extra start-up for --help"


def run(ctx: Context) -> list[Row]:
    from bench.processes import time_command

    env = ctx.env({"NO_COLOR": "1", "TERM": "dumb"})
    measures = {
        "python": lambda: time_command([ctx.python, "-c", "pass"], env=env, cwd=ctx.work_dir),
        "help": lambda: time_command([*ctx.chatops, "--help"], env=env, cwd=ctx.work_dir),
    }
    example = ctx.root / "stages.yaml"
    lint_skip = None
    if not ctx.help_text("lint-templates"):
        lint_skip = "`chatops lint-templates` does not exist yet"
    elif not example.exists():
        lint_skip = f"no example bot at {example.name}"
    else:
        # The exit code is not checked: a finding in the example bot is the linter's business, not this figure's.
        measures["lint"] = lambda: time_command(
            [*ctx.chatops, "lint-templates"], env=env, cwd=ctx.root, expect_exit=None
        )
    rounds = ctx.rounds(15, 5)
    times = interleave(measures, rounds=rounds)
    baseline = median(times["python"])
    note = f"median of {rounds} interleaved runs"
    rows = [
        Row(
            benchmark=NAME,
            figure="`chatops --help`",
            value=median(times["help"]),
            unit="s",
            baseline=baseline,
            baseline_label="python -c pass",
            target=Target("<=", HELP_EXTRA_TARGET_S, on="extra"),
            note=note,
        )
    ]
    if "lint" in times:
        rows.append(
            Row(
                benchmark=NAME,
                figure="`chatops lint-templates` (example bot)",
                value=median(times["lint"]),
                unit="s",
                baseline=baseline,
                baseline_label="python -c pass",
                note=note,
            )
        )
    else:
        rows.append(Row(benchmark=NAME, figure="`chatops lint-templates` (example bot)", skipped=lint_skip))
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
