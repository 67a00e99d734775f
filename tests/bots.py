"""A small test bot written into a folder, covering every kind of stage and condition."""

from __future__ import annotations

import textwrap
from pathlib import Path

STAGES = """\
bot:
  name: Test Shop
  start: welcome
  timezone: Europe/Berlin
  session_timeout: 1h
  stale_after: 10m
  max_replies: 2
variables:
  company: Test Shop
providers:
  - name: order
    use: http
    url: "{order_url}?customer={{{{ user.id }}}}"
    provides: [status]
    timeout: 1s
    retries: 0
stages:
  welcome:
    reply: welcome.j2
    buttons:
      - {{id: track, title: Track my order}}
      - {{id: human, title: Talk to a person}}
    next: menu
  menu:
    prompt: menu.j2
    transitions:
      - when: {{button: track}}
        to: tracking
      - when: {{keywords: [agent, human]}}
        to: handoff
      - when: {{regex: '(?i)\\bTS-\\d+'}}
        to: tracking
      - when: {{intent: refund}}
        to: refund
      - when: {{button: long}}
        to: long
    on_error: sorry.j2
  tracking:
    reply: tracking.j2
    next: menu
    on_error: sorry.j2
  refund:
    reply: refund.j2
    next: menu
  long:
    reply: long.j2
    next: menu
  handoff:
    reply: handoff.j2
    handoff: true
"""

TEMPLATES = {
    "welcome.j2": "Hi {{ user.name or 'there' }}! Welcome to {{ company }}. You sent a {{ message.kind }}.",
    "menu.j2": "You are the assistant of {{ company }}. Be brief.",
    "tracking.j2": "Your order is {{ order.status }}.",
    "refund.j2": "Refunds take 5 days.",
    "long.j2": "{% for i in range(3000) %}word{{ i }} {% endfor %}",
    "handoff.j2": "A person will answer you soon.",
    "sorry.j2": "Sorry, we cannot look that up right now.",
}


def write_bot(folder: Path, *, order_url: str = "http://127.0.0.1:9/orders") -> Path:
    """Write stages.yaml and templates/ into ``folder``; returns the stages.yaml path."""
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    for name, source in TEMPLATES.items():
        (folder / "templates" / name).write_text(source)
    path = folder / "stages.yaml"
    path.write_text(textwrap.dedent(STAGES).format(order_url=order_url))
    return path
