"""Benchmark 9, convtest: what ``chatops test`` adds per step on top of ``simulate``'s own cost of a message.

200 cases × 5 steps (``--quick``: 40 × 5) on the offline responder: the echo bot's prompt stage, so every step is a
webhook through the real Flask route, a worker turn with an AI call, and settled replies, checked against five
expectations. The runner records, per step, its whole time (``StepReport.seconds``: sending, reading the outcome,
checking) and the part spent in the simulator's ``send`` (``send_seconds``, what ``chatops simulate`` does for one
message); both are summed over the same run, so machine noise hits both alike. Target: the runner adds under 20 %,
per step and over the whole run (a case's own setup included).
One case at a time, so thread interleaving does not blur the split; the parallel wall time is shown beside it.
``python -m bench.convtest`` runs it alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.bots import write_echo_bot
from bench.harness import Context, standalone
from bench.results import Row, Target

NAME = "convtest"
TITLE = "chatops test: runner time per step against simulate's own"
ORDER = 85
STEPS_PER_CASE = 5
PARALLEL_JOBS = 4


def run(ctx: Context) -> list[Row]:
    from chatops.config.bot import load_bot
    from chatops.config.settings import load_settings
    from chatops.convtest import find_test_files, load_test_files, run_cases

    count = int(ctx.pick(200, 40))
    with tempfile.TemporaryDirectory(dir=ctx.work_dir) as scratch:
        folder = Path(scratch) / "bot"
        bot = load_bot(write_echo_bot(folder, ai=True))
        cases_file = folder / "tests" / "cases.yaml"
        cases_file.parent.mkdir(parents=True)
        cases_file.write_text(test_file(count, STEPS_PER_CASE), encoding="utf-8")
        cases = [case for f in load_test_files(find_test_files([cases_file]), bot) for case in f.cases]
        settings = load_settings(ai="offline", database_url=f"sqlite:///{Path(scratch) / 'unused.db'}")
        ctx.log(f"convtest: {count} cases × {STEPS_PER_CASE} steps, one at a time")
        serial = run_cases(settings, bot, cases, jobs=1)
        ctx.log(f"convtest: the same at {PARALLEL_JOBS} cases at a time")
        parallel = run_cases(settings, bot, cases, jobs=PARALLEL_JOBS)
    steps = [step for case in serial.cases for step in case.steps]
    total = sum(step.seconds for step in steps)
    send = sum(step.send_seconds for step in steps)
    failed = len(serial.failed) + len(parallel.failed)
    expected = count * STEPS_PER_CASE
    rows = [
        Row(
            benchmark=NAME,
            figure=f"{count} cases × {STEPS_PER_CASE} steps, per step (offline AI, one case at a time)",
            value=total / len(steps) * 1000 if steps else None,
            unit="ms",
            baseline=send / len(steps) * 1000 if steps else None,
            baseline_label="simulate's send, per message, same steps",
            target=Target("<", 1.2),
            note=f"runner adds {(total - send) / len(steps) * 1000:.2f} ms a step" if steps else "",
        ),
        Row(
            benchmark=NAME,
            figure="the whole run per step (case setup included), one case at a time",
            value=serial.seconds / expected * 1000,
            unit="ms",
            baseline=send / len(steps) * 1000 if steps else None,
            baseline_label="simulate's send, per message",
            target=Target("<", 1.2),
            note="a case's setup: its user, test client and worker",
        ),
        Row(
            benchmark=NAME,
            figure=f"wall time per step, {PARALLEL_JOBS} cases at a time",
            value=parallel.seconds / expected * 1000,
            unit="ms",
            baseline=serial.seconds / expected * 1000,
            baseline_label="one case at a time",
            note="whole run: case setup, threads and the database included",
        ),
    ]
    if failed or len(steps) != expected:
        rows = [row.mark_invalid(f"{failed} cases failed, {len(steps)} of {expected} steps ran") for row in rows]
    return rows


def test_file(cases: int, steps: int) -> str:
    """``cases`` cases of ``steps`` messages each, every step checked against five expectations."""
    lines = []
    for case in range(cases):
        lines += [f"- name: customer {case}", "  start: 2026-11-02T10:00", "  steps:"]
        for step in range(steps):
            lines += [
                f"    - user: question {step} of customer {case}",
                "      expect:",
                "        stage: chat",
                "        reply_count: 1",
                "        reply_contains: '[offline AI]'",
                "        ai_called: true",
                "        error: false",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
