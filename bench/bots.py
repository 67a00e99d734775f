"""Bot definitions the benchmarks generate: a large one for the linter, small ones for the servers.

Every bot is written into a fresh folder as ``stages.yaml`` + ``templates/`` (the layout ``chatops`` expects), so
a command run with that folder as its working directory finds it by the defaults.
"""

from __future__ import annotations

from pathlib import Path

import yaml

PROVIDERS = {
    "order": ["number", "status", "eta", "items", "total"],
    "account": ["tier", "points", "email", "since"],
    "shipment": ["carrier", "tracking", "events"],
    "invoice": ["number", "amount", "due", "lines"],
    "loyalty": ["level", "rewards", "expires"],
}
_BUILTIN_LINES = [
    "Hello {{ user.name | default('there') }}, you are writing on {{ user.channel }}.",
    "It is {{ clock.weekday }} {{ clock.time }}; we are {{ 'open' if clock.business_hours else 'closed' }}.",
    "{% if conversation.turn_count > 3 %}Thanks for your patience, {{ user.name | default('friend') }}.{% endif %}",
    "Your last message was: {{ message.text | default('', true) | truncate(80) }}",
    "{{ company }} support is here {{ hours }}.",
    "{% for name, answer in faq.items() %}- {{ name | title }}: {{ answer }}\n{% endfor %}",
]


def _write(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _partial(index: int) -> str:
    lines = [f"{{#- partial {index}: built-in and static variables only (included by several stages) -#}}"]
    for offset in range(3):
        lines.append(_BUILTIN_LINES[(index + offset) % len(_BUILTIN_LINES)])
    lines.append("{% for past in conversation.last_messages[-3:] %}> {{ past }}\n{% endfor %}")
    return "\n".join(lines) + "\n"


def _stage_template(index: int, provider: str, partials: list[int], *, prompt: bool) -> str:
    fields = PROVIDERS[provider]
    lines = [f"{{#- stage {index} ({'prompt' if prompt else 'reply'}) using the {provider} provider -#}}"]
    if prompt:
        lines.append("You are the assistant of {{ company }}. Answer in at most three sentences.")
    lines.append(f"{{% set label = '{provider}' | upper %}}")
    first, second = f"{provider}.{fields[0]}", f"{provider}.{fields[1]}"
    lines.append(f"{{{{ label }}}}: {{{{ {first} }}}} — {{{{ {second} | default('n/a') }}}}")
    list_field = fields[-1] if provider != "account" else "since"
    lines.append(f"{{% if {provider}.{list_field} is iterable and {provider}.{list_field} is not string %}}")
    lines.append(f"{{% for entry in {provider}.{list_field} %}}")
    lines.append("  {{ loop.index }}. {{ entry.name | default(entry) }}{% if not loop.last %},{% endif %}")
    lines.append("{% endfor %}")
    lines.append("{% else %}")
    lines.append(f"  {{{{ {provider}.{list_field} }}}}")
    lines.append("{% endif %}")
    # Conversation memory: every stage template reads state, guarded, so lint's flow pass runs on all of them.
    for name in _state_names(index):
        lines.append(f"{{% if state.{name} is defined %}}You told us: {{{{ state.{name} }}}}.{{% endif %}}")
    lines.append(f"{{{{ state.{_state_names(index + 1)[0]} | default('') }}}}")
    for part in partials:
        lines.append(f'{{% include "partials/p_{part:03d}.j2" %}}')
    return "\n".join(lines) + "\n"


def _state_names(index: int) -> list[str]:
    """Two of the 20 state names the generated bot keeps, different from stage to stage."""
    return [f"note_{index % 20:02d}", f"note_{(index * 3 + 7) % 20:02d}"]


def _error_template(index: int) -> str:
    return (
        f"{{#- stage {index}: a provider or the AI failed; providers are not available here -#}}\n"
        "Sorry {{ user.name | default('') }}, something went wrong on our side.\n"
        "{{ company }} support ({{ hours }}) will get back to you.\n"
    )


def write_lint_bot(folder: Path, *, stages: int = 200, templates: int = 1000) -> Path:
    """A valid bot of ``stages`` stages and ``templates`` template files; returns its stages.yaml.

    Each stage has its reply or prompt template (one of five http providers, loops, conditionals, filters, guarded
    reads of conversation state that the transitions ``set:``) and an ``on_error`` template; the rest are partials
    that the stage templates include (built-ins and static variables).
    """
    own = 2 * stages
    if templates < own + stages:
        raise ValueError(f"{templates} templates are too few for {stages} stages (need {own + stages})")
    partial_count = templates - own
    templates_dir = folder / "templates"
    for index in range(partial_count):
        _write(templates_dir, f"partials/p_{index:03d}.j2", _partial(index))
    provider_names = list(PROVIDERS)
    definition: dict[str, object] = {
        "bot": {"name": "Generated Bench Bot", "start": "stage_000", "timezone": "UTC"},
        "ai": {"model": "gpt-4o-mini", "temperature": 0.3, "max_tokens": 300},
        "variables": {
            "company": "Northwind",
            "hours": "Mon–Fri 9:00–17:00",
            "faq": {"shipping": "3–5 days", "returns": "30 days", "payment": "card or invoice"},
        },
        "providers": [
            {
                "name": name,
                "use": "http",
                "url": f"https://shop.example/api/{name}?customer={{{{ user.id }}}}",
                "provides": fields,
                "timeout": "2s",
            }
            for name, fields in PROVIDERS.items()
        ],
    }
    stage_defs: dict[str, object] = {}
    per_stage = -(-partial_count // stages)  # ceil: every partial is included by some stage
    for index in range(stages):
        name = f"stage_{index:03d}"
        prompt = index % 2 == 1
        provider = provider_names[index % len(provider_names)]
        partials = sorted({(index * per_stage + k) % partial_count for k in range(per_stage)})
        main = f"stages/{name}.j2"
        _write(templates_dir, main, _stage_template(index, provider, partials, prompt=prompt))
        _write(templates_dir, f"errors/{name}.j2", _error_template(index))
        following = f"stage_{(index + 1) % stages:03d}"
        transitions: list[dict[str, object]] = [
            {"when": {"button": "next"}, "to": following, "set": {_state_names(index)[0]: "message.text"}},
            {"when": {"keywords": ["agent", "human", "person"]}, "to": f"stage_{(index * 7 + 3) % stages:03d}"},
        ]
        if prompt:
            transitions.append({"when": {"intent": "refund"}, "to": f"stage_{(index * 13 + 5) % stages:03d}"})
        transitions.append({"when": {"default": True}, "to": name})
        stage: dict[str, object] = {
            "prompt" if prompt else "reply": main,
            "on_error": f"errors/{name}.j2",
            "buttons": [{"id": "next", "title": "Next"}, {"id": "human", "title": "Talk to a person"}],
            "providers": [provider],
            "transitions": transitions,
        }
        stage_defs[name] = stage
    definition["stages"] = stage_defs
    path = folder / "stages.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def write_echo_bot(folder: Path, *, ai: bool) -> Path:
    """A one-stage bot: with ``ai`` every message is a prompt turn (one AI call), else a fixed reply."""
    templates_dir = folder / "templates"
    if ai:
        _write(templates_dir, "chat.j2", "You are the assistant of {{ company }}. Answer briefly.\n")
        stage: dict[str, object] = {"prompt": "chat.j2"}
    else:
        _write(templates_dir, "ack.j2", "Thanks {{ user.name | default('') }}, we got your message.\n")
        stage = {"reply": "ack.j2"}
    stage["transitions"] = [{"when": {"default": True}, "to": "chat"}]
    definition = {
        "bot": {"name": "Bench Bot", "start": "chat", "timezone": "UTC"},
        "variables": {"company": "Northwind"},
        "stages": {"chat": stage},
    }
    path = folder / "stages.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
