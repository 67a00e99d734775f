"""The markdown output: the machine description, the table of figures, RESULTS.md and the README's latest table."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.results import Row

LATEST_START = "<!-- latest-results:start -->"
LATEST_END = "<!-- latest-results:end -->"


@dataclass(frozen=True)
class Machine:
    """Where the figures were measured."""

    cores: int
    cpu: str
    python: str
    postgres: str
    load_generator: str
    commit: str

    def describe(self) -> str:
        return (
            f"{self.cores} cores ({self.cpu}), Python {self.python}, {self.postgres}, "
            f"load generator: {self.load_generator}, commit {self.commit}"
        )


def describe_machine(*, database_url: str, load_generator: str, root: Path) -> Machine:
    """Cores, CPU model, Python, PostgreSQL (server ``SELECT version()``, else ``psql --version``) and git commit."""
    return Machine(
        cores=os.cpu_count() or 1,
        cpu=_cpu_model(),
        python=platform.python_version(),
        postgres=postgres_version(database_url),
        load_generator=load_generator,
        commit=_git_commit(root),
    )


def postgres_version(database_url: str) -> str:
    """``PostgreSQL 15.4`` from the server at ``database_url``, else from ``psql --version``, else ``no PostgreSQL``."""
    try:
        import sqlalchemy as sa

        from chatops.db.connect import parse_database_url

        engine = sa.create_engine(
            parse_database_url(database_url), poolclass=sa.NullPool, connect_args={"connect_timeout": 3}
        )
        try:
            with engine.connect() as connection:
                full = str(connection.execute(sa.text("SELECT version()")).scalar_one())
        finally:
            engine.dispose()
        match = re.match(r"PostgreSQL [\d.]+", full)
        return match.group(0) if match else full.split(" on ")[0]
    except Exception as exc:  # any failure (driver, network, auth) means "ask psql instead"
        print(f"PostgreSQL server version unavailable: {exc}".splitlines()[0], file=sys.stderr)
    psql = shutil.which("psql")
    if psql:
        done = subprocess.run([psql, "--version"], capture_output=True, text=True, timeout=10, check=False)
        match = re.search(r"PostgreSQL\)? ([\d.]+)", done.stdout)
        if match:
            return f"PostgreSQL {match.group(1)} (psql; server unreachable)"
    return "no PostgreSQL"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(root: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def format_number(value: float | None, unit: str) -> str:
    """``1,234 req/s``, ``12.3 ms``, ``0.412 s``, ``85.2 MiB``; ``—`` for none."""
    if value is None:
        return "—"
    if abs(value) >= 1000:
        shown = f"{value:,.0f}"
    elif abs(value) >= 100:
        shown = f"{value:.0f}"
    elif abs(value) >= 10:
        shown = f"{value:.1f}"
    elif abs(value) >= 1:
        shown = f"{value:.2f}"
    else:
        shown = f"{value:.3f}"
    return f"{shown} {unit}".rstrip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(rows: Sequence[Row]) -> str:
    """The markdown table: benchmark, figure, value, baseline, ratio, target, result, notes."""
    lines = [
        "| benchmark | figure | value | baseline | ratio | target | result | notes |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for row in rows:
        baseline = format_number(row.baseline, row.unit)
        if row.baseline is not None and row.baseline_label:
            baseline = f"{baseline} ({row.baseline_label})"
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
        target = row.target.describe(row.unit) if row.target is not None else "—"
        reason = row.error or row.skipped or row.invalid
        notes = "; ".join(part for part in (reason, row.note) if part)
        cells = [
            row.benchmark,
            row.figure,
            format_number(row.value, row.unit),
            baseline,
            ratio,
            target,
            row.status,
            notes,
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def render_report(rows: Sequence[Row], *, machine: Machine, when: datetime, label: str, seconds: float) -> str:
    """One RESULTS.md section: heading with date and run kind, the machine, the table."""
    return (
        f"## {when.astimezone(UTC):%Y-%m-%d %H:%M} UTC — {label}\n\n"
        f"Machine: {machine.describe()}. Whole run: {seconds:.0f} s.\n\n"
        f"{render_table(rows)}"
    )


def append_results(path: Path, report: str) -> None:
    """Append ``report`` to RESULTS.md (created with a heading when missing)."""
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\nAppended by `make bench` (`python -m bench`); newest last. "
            "See bench/README.md for what each figure means.\n"
        )
    with path.open("a") as handle:
        handle.write("\n" + report)


def update_latest(readme: Path, report: str) -> bool:
    """Replace the table between the latest-results markers of ``readme``; ``False`` when it has no markers."""
    if not readme.exists():
        return False
    text = readme.read_text()
    start, end = text.find(LATEST_START), text.find(LATEST_END)
    if start < 0 or end < start:
        return False
    readme.write_text(text[: start + len(LATEST_START)] + "\n" + report + text[end:])
    return True
