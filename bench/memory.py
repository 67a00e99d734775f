"""Benchmark 5, memory: the peak RSS of each ``chatops serve`` through benchmarks 1 and 2.

Read from ``VmHWM`` in /proc/<pid>/status just before each server is stopped (Linux keeps the high-water mark, so
no sampling is needed; psutil is not a dependency). Baseline: the bare waitress app of benchmark 1 under the same
load. ``python -m bench.memory`` runs benchmarks 1 and 2 first.
"""

from __future__ import annotations

from bench.harness import Context, standalone
from bench.results import Row, skipped

NAME = "memory"
TITLE = "peak RSS of chatops serve"
ORDER = 90
NEEDS = ("webhooks", "end_to_end")

FIGURES = {
    "webhooks:b": "serve --no-workers, PostgreSQL, through benchmark 1",
    "webhooks:c": "serve --no-workers, SQLite, through benchmark 1",
    "end_to_end": "serve with workers, PostgreSQL, through benchmark 2",
}


def run(ctx: Context) -> list[Row]:
    peaks: dict[str, int | None] = ctx.observations.get("peak_rss_kib", {})
    bare = peaks.get("webhooks:a")
    rows = []
    for key, figure in FIGURES.items():
        peak = peaks.get(key)
        if peak is None:
            source = "webhooks" if key.startswith("webhooks") else "end_to_end"
            rows.append(skipped(NAME, figure, f"no measurement: benchmark {source} did not run this server"))
            continue
        rows.append(
            Row(
                benchmark=NAME,
                figure=figure,
                value=peak / 1024,
                unit="MiB",
                baseline=bare / 1024 if bare is not None else None,
                baseline_label="bare waitress app",
                note="VmHWM",
            )
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
