"""Redaction of a corpus line against hostile cases: numbers in text, international formats, profile names."""

from __future__ import annotations

import json
from typing import Any

from chatops.replay.redact import Redactor
from chatops.templating.builtin import mask_phone


def line(user_id: str, name: str | None, *texts: str, channel: str = "whatsapp") -> dict[str, Any]:
    return {
        "corpus": "chatops-replay",
        "version": 1,
        "conversation": {"id": 1, "channel": channel, "account_id": "1065", "user_id": user_id, "user_name": name},
        "turns": [
            {
                "id": n,
                "started_at": "2026-11-24T10:00:00+00:00",
                "user_text": text,
                "messages": [{"id": f"wamid.HBgL{n}", "kind": "text", "text": text, "payload": {}, "timestamp": "x"}],
                "variables": {"user": {"id": mask_phone(user_id), "name": name}, "message": {"id": f"wamid.HBgL{n}"}},
                "replies": [{"text": f"Thanks {name}"}],
                "state_before": {},
                "state_after": {"email": text},
            }
            for n, text in enumerate(texts, start=1)
        ],
    }


def dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def test_numbers_in_text_in_every_format_become_one_stable_pseudonym() -> None:
    redactor = Redactor()
    out = redactor.line(
        line(
            "4915123456789",
            "Ada Lovelace",
            "call me on +49 151 23456789 or 0049-151-2345-6789",
            "my other one is (030) 1234-5678, not 4915123456789",
            "order TS-12345 on 2026-11-24 at 10:30, total 1,299.00",
        )
    )
    text = dump(out)
    for secret in ("23456789", "1234-5678", "4915123456789", "6789", "Ada", "Lovelace", "wamid"):
        assert secret not in text, secret
    pseudo = out["conversation"]["user_id"]
    assert pseudo.startswith("1555")
    assert pseudo != "4915123456789"
    first = out["turns"][0]["user_text"]
    assert first.count("+" + pseudo) == 2  # the same number in two formats, the same pseudonym
    assert "TS-12345" in out["turns"][2]["user_text"]
    assert "2026-11-24" in out["turns"][2]["user_text"]
    assert "10:30" in out["turns"][2]["user_text"]
    assert "1,299.00" in out["turns"][2]["user_text"]
    assert out["turns"][0]["started_at"] == "2026-11-24T10:00:00+00:00"
    again = redactor.line(line("4915123456789", "Ada Lovelace", "hi"))
    assert again["conversation"]["user_id"] == pseudo
    assert again["conversation"]["user_name"] == "Person 1"


def test_names_emails_and_ids_in_free_text() -> None:
    out = Redactor().line(
        line(
            "2712345678901234",
            "José (Pepe) O'Brien",
            "I am JOSÉ o'brien, write to Jose.OBrien+bot@mail.example.com or JOSE.OBRIEN+BOT@MAIL.EXAMPLE.COM",
            "Pepe here. Josephine is my sister.",
            channel="messenger",
        )
    )
    text = dump(out)
    assert "José" not in text
    assert "JOSÉ" not in text
    assert "o'brien" not in text.lower()
    assert "Pepe" not in text
    assert "mail.example.com" not in text.lower()
    assert "2712345678901234" not in text
    assert out["conversation"]["user_id"] == "user-1"
    first = out["turns"][0]["user_text"]
    assert first.count("person-1@example.invalid") == 2  # case-insensitive: one address, one pseudonym
    assert "Josephine" in out["turns"][1]["user_text"]  # a longer word is not a name part


def test_cjk_names_and_regex_characters_in_names() -> None:
    out = Redactor().line(line("15550001111", "李雷", "我是李雷啊", "ok"))
    assert "李雷" not in dump(out)
    out = Redactor().line(line("15550001111", "a.*b (c", "a.*b (c said axxb"))
    assert out["turns"][0]["user_text"].endswith("said axxb")
