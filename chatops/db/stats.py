"""Figures for the admin API's ``/stats``: per day in/out/turns/tokens/latency, failures by code, waiting people."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from chatops.db.conversations import waiting_clause
from chatops.db.tables import conversations, inbound_messages, outbound_messages, turns


def collect_stats(db: sa.Engine, *, now: datetime, days: int) -> dict[str, Any]:
    """The last ``days`` days (UTC, today included). Reads only rows in that range (indexed by time where it can)."""
    start = datetime.combine((now - timedelta(days=days - 1)).date(), datetime.min.time(), tzinfo=now.tzinfo)
    per_day: dict[date, dict[str, Any]] = defaultdict(
        lambda: {"messages_in": 0, "messages_out": 0, "turns": 0, "tokens": 0, "latencies": []}
    )
    i, o, t, c = inbound_messages.c, outbound_messages.c, turns.c, conversations.c
    with db.connect() as connection:
        for (at,) in connection.execute(sa.select(i.received_at).where(i.received_at >= start)):
            per_day[at.date()]["messages_in"] += 1
        for (at,) in connection.execute(sa.select(o.created_at).where(o.created_at >= start)):
            per_day[at.date()]["messages_out"] += 1
        for at, usage, latency in connection.execute(
            sa.select(t.finished_at, t.usage, t.latency_ms).where(t.finished_at >= start)
        ):
            day = per_day[at.date()]
            day["turns"] += 1
            day["tokens"] += int((usage or {}).get("total_tokens") or 0)
            if latency is not None:
                day["latencies"].append(float(latency))
        failures = Counter(
            {
                str(code if code is not None else "none"): count
                for code, count in connection.execute(
                    sa.select(o.error_code, sa.func.count())
                    .where(o.status == "failed", o.created_at >= start)
                    .group_by(o.error_code)
                )
            }
        )
        waiting = [
            (last_inbound, operator)
            for last_inbound, operator in connection.execute(
                sa.select(c.last_inbound_at, c.last_operator_at).where(waiting_clause())
            )
        ]
    waits = sorted((now - inbound).total_seconds() for inbound, _ in waiting if inbound is not None)
    return {
        "days": [
            {
                "date": day.isoformat(),
                "messages_in": per_day[day]["messages_in"],
                "messages_out": per_day[day]["messages_out"],
                "turns": per_day[day]["turns"],
                "ai_tokens": per_day[day]["tokens"],
                "ai_latency_ms_median": statistics.median(per_day[day]["latencies"])
                if per_day[day]["latencies"]
                else None,
            }
            for day in (start.date() + timedelta(days=n) for n in range(days))
        ],
        "failures_by_error_code": dict(failures),
        "waiting": {
            "conversations": len(waiting),
            "longest_seconds": waits[-1] if waits else None,
            "median_seconds": statistics.median(waits) if waits else None,
        },
    }
