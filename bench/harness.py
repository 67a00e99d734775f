"""Discover the benchmark modules, run them with one :class:`Context`, print and record the table.

``python -m bench`` runs every benchmark; ``--only NAME`` (repeatable) runs some, plus the ones they need;
``--quick`` shortens every benchmark to about a minute in all. ``python -m bench.<name>`` is ``--only <name>``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from bench import report
from bench.databases import server_url
from bench.load import LoadGenerator, choose_generator
from bench.results import Row, Skip

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
README = ROOT / "bench" / "README.md"


@dataclass(frozen=True)
class Context:
    """What every benchmark gets: the run's options, tools and a scratch directory.

    ``observations`` carries figures from one benchmark to a later one (e.g. the peak RSS of the servers that
    benchmark 1 started, for benchmark 5).
    """

    quick: bool
    root: Path
    work_dir: Path
    python: str
    chatops: tuple[str, ...]
    database_server: str
    load: LoadGenerator
    observations: dict[str, Any] = field(default_factory=dict)
    _help_cache: dict[str, str] = field(default_factory=dict)

    def rounds(self, full: int, quick: int) -> int:
        """How many interleaved rounds: ``full`` normally, ``quick`` with ``--quick``."""
        return quick if self.quick else full

    def pick(self, full: Any, quick: Any) -> Any:
        """``full`` normally, ``quick`` with ``--quick`` (durations, message counts …)."""
        return quick if self.quick else full

    def log(self, message: str) -> None:
        """Progress on stderr (stdout carries the table)."""
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a child process: ours without CHATOPS_*/OPENAI_* (no stray settings), plus ``extra``."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "OPENAI_"))}
        clean.update(extra or {})
        return clean

    def help_text(self, *command: str) -> str:
        """``chatops <command…> --help`` output (cached); empty when the command does not exist."""
        key = " ".join(command)
        if key not in self._help_cache:
            done = subprocess.run(
                [*self.chatops, *command, "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=self.env({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}),
                cwd=self.work_dir,
            )
            self._help_cache[key] = done.stdout if done.returncode == 0 else ""
        return self._help_cache[key]

    def has_option(self, command: str, option: str) -> bool:
        """Whether ``chatops <command> --help`` lists ``option`` (features are detected, not assumed)."""
        text = self.help_text(command)
        return any(token.strip(",[]") == option for token in text.split())


@dataclass(frozen=True)
class Benchmark:
    """A discovered benchmark module."""

    name: str
    title: str
    order: int
    needs: tuple[str, ...]
    run: Callable[[Context], list[Row]]


def discover(package: ModuleType | None = None) -> list[Benchmark]:
    """Every module of ``bench`` that exposes ``NAME`` and ``run``, sorted by ``ORDER`` then name."""
    if package is None:
        import bench as package
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if isinstance(getattr(module, "NAME", None), str) and callable(getattr(module, "run", None)):
            found.append(
                Benchmark(
                    name=module.NAME,
                    title=getattr(module, "TITLE", module.NAME),
                    order=int(getattr(module, "ORDER", 100)),
                    needs=tuple(getattr(module, "NEEDS", ())),
                    run=module.run,
                )
            )
    return sorted(found, key=lambda b: (b.order, b.name))


def select(benchmarks: Sequence[Benchmark], only: Iterable[str]) -> list[Benchmark]:
    """The benchmarks named in ``only`` and those they need, in run order; all of them when ``only`` is empty.

    Raises SystemExit(2) naming the known benchmarks when a name is unknown.
    """
    wanted = list(only)
    if not wanted:
        return list(benchmarks)
    by_name = {b.name: b for b in benchmarks}
    chosen: set[str] = set()
    pending = list(wanted)
    while pending:
        name = pending.pop()
        if name not in by_name:
            known = ", ".join(by_name)
            print(f"error: unknown benchmark {name!r}; known: {known}", file=sys.stderr)
            raise SystemExit(2)
        if name not in chosen:
            chosen.add(name)
            pending.extend(by_name[name].needs)
    return [b for b in benchmarks if b.name in chosen]


def run_benchmark(benchmark: Benchmark, ctx: Context) -> list[Row]:
    """Run one benchmark; a Skip becomes one skipped row, any other exception one error row (traceback on stderr)."""
    ctx.log(f"{benchmark.name}: {benchmark.title}")
    started = time.monotonic()
    try:
        rows = benchmark.run(ctx)
    except Skip as exc:
        rows = [Row(benchmark=benchmark.name, figure=benchmark.title, skipped=str(exc))]
    except Exception as exc:  # one broken benchmark must not hide the others' figures
        traceback.print_exc(file=sys.stderr)
        rows = [Row(benchmark=benchmark.name, figure=benchmark.title, error=f"{type(exc).__name__}: {exc}"[:300])]
    ctx.log(f"{benchmark.name}: done in {time.monotonic() - started:.1f} s")
    for row in rows:
        ctx.log(f"  {row.figure}: {report.format_number(row.value, row.unit)} [{row.status}]")
    return rows


def chatops_command() -> tuple[str, ...]:
    """The ``chatops`` console script beside this interpreter, else ``python -m chatops``."""
    script = Path(sys.executable).parent / "chatops"
    return (str(script),) if script.exists() else (sys.executable, "-m", "chatops")


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM (e.g. make interrupted) unwinds like Ctrl-C, so every `with`/`finally` stops its processes.
    raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run this benchmark (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--load-generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    parser.add_argument("--keep-work-dir", action="store_true", help="keep generated files and server logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks; exit 1 when one crashed, else 0 (missed targets show as FAIL in the table)."""
    options = parse_args(argv)
    benchmarks = discover()
    if options.list:
        for benchmark in benchmarks:
            print(f"{benchmark.name:12} {benchmark.title}")
        return 0
    chosen = select(benchmarks, options.only)
    signal.signal(signal.SIGTERM, _terminate)
    work_dir = Path(tempfile.mkdtemp(prefix="chatops-bench-"))
    load = choose_generator(options.load_generator, say=lambda text: print(text, file=sys.stderr))
    ctx = Context(
        quick=options.quick,
        root=ROOT,
        work_dir=work_dir,
        python=sys.executable,
        chatops=chatops_command(),
        database_server=server_url(),
        load=load,
    )
    started = time.monotonic()
    when = datetime.now(UTC)
    rows: list[Row] = []
    try:
        for benchmark in chosen:
            rows.extend(run_benchmark(benchmark, ctx))
    finally:
        if options.keep_work_dir:
            print(f"work directory kept: {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    machine = report.describe_machine(database_url=ctx.database_server, load_generator=load.name, root=ROOT)
    label = ("quick run" if options.quick else "full run") + (
        f", only {', '.join(options.only)}" if options.only else ""
    )
    text = report.render_report(rows, machine=machine, when=when, label=label, seconds=time.monotonic() - started)
    print(text)
    if not options.no_record:
        report.append_results(RESULTS, text)
        if not options.quick and not options.only:
            report.update_latest(README, text)
    return 1 if any(row.status == "error" for row in rows) else 0


def standalone(name: str, argv: Sequence[str] | None = None) -> int:
    """``python -m bench.<name> [options]``: the harness with ``--only <name>``."""
    return main(["--only", name, *(sys.argv[1:] if argv is None else argv)])
