"""The HTML report (``--report replay.html``): one self-contained page, readable offline without a server.

Everything is inline — styles, a few lines of script, the data — and the page loads nothing: no fonts, images,
stylesheets or scripts from anywhere (a Content-Security-Policy in the page forbids it). The summary and every
changed turn are rendered as HTML by Python (so the page reads without JavaScript); the script only filters by
stage and outcome. Every text from the conversations is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem;color:#1b1f24;background:#fff}
h1{font-size:1.3rem}table.summary td{padding:.15rem .8rem;border-bottom:1px solid #ddd}
table.summary td:last-child{text-align:right;font-variant-numeric:tabular-nums}
.filters{margin:1rem 0;display:flex;gap:1rem;align-items:center}
.turn{border:1px solid #ccd;border-radius:6px;margin:.8rem 0;padding:.6rem .8rem}
.turn header{font-weight:600;margin-bottom:.4rem}.badge{border-radius:4px;padding:0 .4rem;margin-left:.4rem}
.changed .badge{background:#fff3bf}.errored .badge{background:#ffc9c9}.unchanged .badge{background:#d3f9d8}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:.8rem}.sides pre{white-space:pre-wrap;margin:0;
background:#f6f8fa;padding:.5rem;border-radius:4px}del{background:#ffd7d5;color:#82071e}
ins{background:#ccffd8;color:#055d20;text-decoration:none}.meta{color:#57606a;font-size:.9em}
.gate{color:#b00020;font-weight:600}
"""

_SCRIPT = """
(function(){
  var stage=document.getElementById('stage'), outcome=document.getElementById('outcome');
  function apply(){
    var shown=0;
    document.querySelectorAll('.turn').forEach(function(t){
      var ok=(!stage.value||t.dataset.stage===stage.value)&&(!outcome.value||t.dataset.outcome===outcome.value);
      t.hidden=!ok; if(ok){shown++;}
    });
    document.getElementById('shown').textContent=shown;
  }
  stage.addEventListener('change',apply); outcome.addEventListener('change',apply); apply();
})();
"""


def render_html(report: dict[str, Any]) -> str:
    """The report page for ``report`` (the JSON document of :func:`chatops.replay.report.build_report`)."""
    summary, run = report["summary"], report["run"]
    listed = [t for t in report["turns"] if t["outcome"] != "unchanged"]
    stages = sorted({t["stage_before"] or "(start)" for t in listed})
    rows = [
        ("turns", summary["turns"]),
        ("unchanged", summary["unchanged"]),
        ("changed", summary["changed"]),
        ("errored", summary["errored"]),
        ("judged-failing", summary["judged_failing"]),
        ("mean-similarity", f"{summary['mean_similarity']:.3f}"),
        ("transitions-changed", summary["transitions_changed"]),
        ("state-changed", summary["state_changed"]),
        ("tokens-delta", f"{summary['tokens']['delta']:+d}"),
    ]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>chatops replay: {summary['changed']} changed, {summary['errored']} errored</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>chatops replay — {escape(run['mode'])} mode, against the {escape(run['against'])}</h1>",
        f"<p class=meta>candidate {escape(run['stages'])} (version {escape(run['bot_version'] or '')})"
        + (" — interrupted, partial results" if run["interrupted"] else "")
        + "</p>",
        "<table class=summary>",
        *(
            f"<tr><td>{escape(name.replace('-', ' '))}</td><td id=count-{name}>{escape(str(v))}</td></tr>"
            for name, v in rows
        ),
        "</table>",
        *(f"<p class=gate>Gate failed: {escape(reason)}</p>" for reason in report["gates"]["failed"]),
        _transitions(summary["changed_transitions"]),
        "<div class=filters><label>Stage <select id=stage><option value=''>all</option>",
        *(f"<option>{escape(s)}</option>" for s in stages),
        "</select></label><label>Outcome <select id=outcome><option value=''>all</option>",
        "<option>changed</option><option>errored</option></select></label>",
        f"<span><span id=shown>{len(listed)}</span> of {len(listed)} turns shown</span></div>",
        *(_turn(turn) for turn in listed),
        f"<script>{_SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts)


def _transitions(changed: list[dict[str, Any]]) -> str:
    if not changed:
        return ""
    rows = "".join(
        f"<tr><td>{escape(str(t['from']))}</td><td>{escape(str(t['recorded']))}</td>"
        f"<td>{escape(str(t['new']))}</td><td>{t['count']}</td></tr>"
        for t in changed
    )
    return (
        f"<h2>Changed transitions</h2><table class=summary><tr><th>from<th>recorded<th>new<th>turns</tr>{rows}</table>"
    )


def _turn(turn: dict[str, Any]) -> str:
    stage = turn["stage_before"] or "(start)"
    diff = "".join(
        escape(text)
        if op == "="
        else f"<{'del' if op == '-' else 'ins'}>{escape(text)}</{'del' if op == '-' else 'ins'}>"
        for op, text in turn["diff"]
    )
    ref, new = turn["reference"], turn["new"]
    notes = []
    if turn["transition_changed"]:
        notes.append(f"transition: {escape(str(ref['stage_after']))} → {escape(str(new['stage_after']))}")
    if turn["state_changed"]:
        notes.append(f"state: {escape(_short(ref['state_after']))} → {escape(_short(new['state_after']))}")
    if new["error"]:
        notes.append(f"error: {escape(new['error'])}")
    if turn["judge"]:
        verdict = turn["judge"]
        notes.append(f"judge: {'pass' if verdict['passed'] else 'FAIL'} — {escape(verdict['reason'])}")
    return (
        f"<section class='turn {turn['outcome']}' data-stage='{escape(stage)}' data-outcome='{turn['outcome']}'>"
        f"<header>turn {escape(turn['key'])} · {escape(stage)}<span class=badge>{turn['outcome']}</span>"
        f" <span class=meta>similarity {turn['similarity']:.2f}</span></header>"
        f"<p class=meta>user: {escape(turn['user_text'] or '')}</p>"
        f"<div class=sides><div><b>reference</b><pre>{escape(chr(10).join(ref['replies']))}</pre></div>"
        f"<div><b>new</b><pre>{escape(chr(10).join(new['replies']))}</pre></div></div>"
        + (f"<p><b>diff</b> <span class=diff>{diff}</span></p>" if diff else "")
        + "".join(f"<p class=meta>{note}</p>" for note in notes)
        + "</section>"
    )


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 300 else text[:297] + "..."
