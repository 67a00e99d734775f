"""The terminal summary of a replay report (rich tables): the counts, changed transitions, the first changed turns."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

CHANGED_SHOWN = 15


def print_summary(console: Console, report: dict[str, Any]) -> None:
    """Print the summary table, the changed transitions and up to CHANGED_SHOWN changed turns with their diff."""
    s, run = report["summary"], report["run"]
    table = Table(title=f"chatops replay ({run['mode']}, against the {run['against']})", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    cost = s["cost_usd"]
    rows = [
        ("turns compared", f"{s['turns']} of {run['total_turns']}" + (" (interrupted)" if run["interrupted"] else "")),
        ("unchanged", str(s["unchanged"])),
        ("changed", str(s["changed"])),
        ("errored", str(s["errored"])),
        ("judged failing", f"{s['judged_failing']} of {s['judged']}" if run["judge_rubric"] else "-"),
        ("mean similarity", f"{s['mean_similarity']:.3f}"),
        ("transitions changed", str(s["transitions_changed"])),
        ("state changed", str(s["state_changed"])),
        ("tokens", f"{s['tokens']['new']} ({s['tokens']['delta']:+d})"),
        ("cost (USD)", f"{cost['new']:.4f} ({cost['delta']:+.4f})" if cost["new"] is not None else "model not priced"),
        ("wall time", f"{run['wall_seconds']:.1f} s"),
    ]
    if run["cache"] is not None:
        rows.append(("AI cache", f"{run['cache']['hits']} hits, {run['cache']['misses']} misses"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if s["changed_transitions"]:
        transitions = Table(title="Changed transitions")
        for column in ("from", "recorded", "new", "turns"):
            transitions.add_column(column)
        for t in s["changed_transitions"]:
            transitions.add_row(str(t["from"]), str(t["recorded"]), str(t["new"]), str(t["count"]))
        console.print(transitions)
    changed = [t for t in report["turns"] if t["outcome"] != "unchanged"]
    for turn in changed[:CHANGED_SHOWN]:
        head = Text(f"{turn['key']} [{turn['stage_before'] or 'start'}] {turn['outcome']}", style="bold")
        head.append(f"  similarity {turn['similarity']:.2f}")
        if turn["transition_changed"]:
            head.append(f"  → {turn['new']['stage_after']} (was {turn['reference']['stage_after']})", style="yellow")
        if turn["judge"]:
            verdict = turn["judge"]
            head.append(f"  judge: {'pass' if verdict['passed'] else 'FAIL'} ({verdict['reason']})")
        console.print(head)
        console.print(Text("  user: ") + Text(turn["user_text"] or ""))
        if turn["new"]["error"]:
            console.print(Text(f"  error: {turn['new']['error']}", style="red"))
        diff = Text("  ")
        for op, piece in turn["diff"]:
            diff.append(piece, style={"=": "", "-": "red strike", "+": "green underline"}[op])
        if turn["diff"]:
            console.print(diff)
    if len(changed) > CHANGED_SHOWN:
        console.print(f"… and {len(changed) - CHANGED_SHOWN} more changed turns (see --report or --json)")
