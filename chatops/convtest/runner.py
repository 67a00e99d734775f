"""Running conversation test cases through the same code as ``chatops simulate``, in parallel, each case isolated.

:func:`run_cases` builds one in-process :class:`~chatops.web.simulator.Simulator` per channel (the real Flask
webhook route with signatures, the real parser, inbox, worker and engine) on a fresh SQLite database in a temporary
folder, then runs the cases on a thread pool. Each case is a user of its own (see :mod:`chatops.convtest.isolation`)
with its own clock. A case stops at its first failing step (with ``update``, a wrong exact reply is recorded for
:mod:`chatops.convtest.update` and the case goes on). Nothing reaches Meta: the simulator settles every reply.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from chatops.config.bot_schema import BotDefinition
from chatops.config.settings import Settings
from chatops.convtest.cases import Case, Expectation, Step
from chatops.convtest.expectations import LOCAL_KEYS, check
from chatops.convtest.graded import Grader
from chatops.convtest.isolation import CaseClock, ProviderStubs
from chatops.convtest.outcome import StepOutcome
from chatops.engine.runtime import build_runtime
from chatops.engine.turn import BotRuntime
from chatops.errors import ChatopsError
from chatops.web.simulator import Simulator, UserInput
from chatops.web.state import utc_now

STEP_SPACING = timedelta(seconds=1)  # the clock moves this much after each message, so turns keep their order


@dataclass(frozen=True)
class Failure:
    """An expectation a step did not meet, with the sentence shown to the user."""

    expectation: Expectation
    message: str


@dataclass(frozen=True)
class StepReport:
    """One step as it ran: what happened, what failed, and how long it took (``send_seconds``: simulate's part)."""

    step: Step
    outcome: StepOutcome
    failures: tuple[Failure, ...] = ()
    seconds: float = 0.0
    send_seconds: float = 0.0


@dataclass(frozen=True)
class CaseReport:
    """One case: its steps up to the first failure; ``error`` when the case could not run (webhook refused …)."""

    case: Case
    steps: tuple[StepReport, ...]
    seconds: float
    error: str | None = None
    updates: tuple[tuple[Expectation, Any], ...] = ()  # exact replies to rewrite (``--update``)

    @property
    def passed(self) -> bool:
        return self.error is None and not any(step.failures for step in self.steps)


@dataclass
class RunReport:
    """Every case run, in file order, and the wall time."""

    cases: list[CaseReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[CaseReport]:
        return [case for case in self.cases if not case.passed]


def run_cases(
    settings: Settings,
    bot: BotDefinition,
    cases: Sequence[Case],
    *,
    jobs: int = 4,
    update: bool = False,
    grader: Grader | None = None,
    runtime: BotRuntime | None = None,
    on_case: Callable[[CaseReport], None] | None = None,
) -> RunReport:
    """Run ``cases`` (``jobs`` at a time) on a fresh temporary SQLite database; ``on_case`` sees each as it ends.

    ``settings`` give the AI mode and credentials; their database is not used. ``runtime`` replaces the one built
    from ``settings`` (templates, providers, AI). Raises ChatopsError when the app cannot be built; a case's own
    ChatopsError (e.g. a refused webhook) is that case's ``error``.
    """
    started = time.perf_counter()
    report = RunReport()
    with tempfile.TemporaryDirectory(prefix="chatops-test-") as folder:
        url = f"sqlite:///{Path(folder) / 'conversations.db'}"
        run_settings = settings.model_copy(update={"database_url": url})
        clock = CaseClock()
        stubs = ProviderStubs()
        runtime = runtime or _quiet_runtime(run_settings, bot)
        stubs.install(runtime)
        simulators: dict[str, Simulator] = {}
        try:
            from chatops.db.connect import create_db_engine

            db = create_db_engine(url, pool_size=jobs + 2)
            for channel in sorted({case.channel for case in cases}):
                simulators[channel] = Simulator(run_settings, bot, channel=channel, db=db, clock=clock, runtime=runtime)
            runner = _CaseRunner(bot, simulators, clock, stubs, update=update, grader=grader, run_start=utc_now())
            lock = threading.Lock()

            def run_one(index: int) -> CaseReport:
                result = runner.run(cases[index], index)
                if on_case is not None:
                    with lock:
                        on_case(result)
                return result

            with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="chatops-test") as pool:
                report.cases = list(pool.map(run_one, range(len(cases))))
        finally:
            runtime.variables.runner.close()
            if simulators:
                next(iter(simulators.values())).db.dispose()
    report.seconds = time.perf_counter() - started
    return report


def _quiet_runtime(settings: Settings, bot: BotDefinition) -> BotRuntime:
    """The bot's runtime, without the offline-AI warning (offline is the default of ``chatops test``)."""
    logger = logging.getLogger("chatops.engine.runtime")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return build_runtime(settings, bot)
    finally:
        logger.setLevel(level)


class _CaseRunner:
    def __init__(
        self,
        bot: BotDefinition,
        simulators: dict[str, Simulator],
        clock: CaseClock,
        stubs: ProviderStubs,
        *,
        update: bool,
        grader: Grader | None,
        run_start: Any,
    ) -> None:
        self.bot = bot
        self.simulators = simulators
        self.clock = clock
        self.stubs = stubs
        self.update = update
        self.grader = grader or Grader()
        self.run_start = run_start

    def run(self, case: Case, index: int) -> CaseReport:
        started = time.perf_counter()
        start = case.start or self.run_start
        self.clock.set(start if start.tzinfo is not None else start.replace(tzinfo=self.bot.bot.tzinfo))
        user_id = f"1555{index:07d}"  # a fictional number per case: its own conversation
        self.stubs.give(case.channel, user_id, case.providers)
        user = self.simulators[case.channel].user(user_id, case.user_name)
        steps: list[StepReport] = []
        updates: list[tuple[Expectation, Any]] = []
        outcome = StepOutcome(stage=None, state={}, mode=None)
        for step in case.steps:
            step_started = time.perf_counter()
            send_seconds = 0.0
            if step.action == "wait":
                self.clock.advance(step.value)
                outcome = StepOutcome(stage=outcome.stage, state=outcome.state, mode=outcome.mode)
            else:
                try:
                    sent = time.perf_counter()
                    result = user.send(_user_input(step), on_accepted=self._answered_late(step))
                    send_seconds = time.perf_counter() - sent
                except ChatopsError as exc:
                    error = f"step {step.number} ({step.describe()}): {exc.message}"
                    return CaseReport(case, tuple(steps), time.perf_counter() - started, error, tuple(updates))
                outcome = StepOutcome.from_result(result)
                self.clock.advance(STEP_SPACING)
            failures = []
            for expectation in step.expectations:
                message = self._check(expectation, outcome, step)
                if message is None:
                    continue
                if self.update and expectation.key == "reply":
                    updates.append((expectation, outcome.texts[0] if len(outcome.texts) == 1 else outcome.texts))
                    continue
                failures.append(Failure(expectation, message))
            steps.append(StepReport(step, outcome, tuple(failures), time.perf_counter() - step_started, send_seconds))
            if failures:
                break
        return CaseReport(case, tuple(steps), time.perf_counter() - started, None, tuple(updates))

    def _answered_late(self, step: Step) -> Callable[[], None] | None:
        """Accepted now, answered later (``answered_after``): the clock moves between the route and the worker."""
        late = step.answered_after
        if late is None:
            return None
        return lambda: self.clock.advance(late)

    def _check(self, expectation: Expectation, outcome: StepOutcome, step: Step) -> str | None:
        if expectation.key in LOCAL_KEYS:
            return check(expectation, outcome)
        sent = step.value if step.action == "user" else step.describe()
        return self.grader.check(expectation, outcome, sent=sent)


def _user_input(step: Step) -> UserInput:
    if step.action == "user":
        return UserInput(text=step.value)
    if step.action in ("button", "choose"):
        return UserInput(button=step.value)
    return UserInput(location=step.value)
