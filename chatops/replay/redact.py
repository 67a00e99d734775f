"""Stable-pseudonym redaction of a corpus line: phone numbers, names, e-mail addresses, user and message ids.

One :class:`Redactor` serves one export: the same input gets the same pseudonym on every line, so a redacted
corpus still shows that two turns talk about the same person or number. What is replaced:

- each conversation's ``user_id`` (a WhatsApp number or a Messenger PSID) wherever it appears, and a WhatsApp
  number's masked form (``•••••••4321``) by the pseudonym's masked form;
- the profile name (``user_name``), whole and word by word, in any text (case-insensitive; names of one letter
  are left alone);
- phone numbers in free text: 7 to 15 digits, with an optional ``+`` or ``00`` and spaces, dashes, dots or
  parentheses between them (ISO dates and times are not phone numbers). Numbers with the same digits get the
  same pseudonym, whatever their format;
- e-mail addresses;
- provider message ids (a WhatsApp ``wamid`` encodes the sender's number).

Pseudonyms: numbers keep their length-ish shape (``+1555`` and a counter), names become ``Person N``, e-mail
addresses ``person-N@example.invalid``, ids ``user-N``/``msg-N``. Redaction errs towards removing too much: a
name that is also a word ("May") is replaced everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chatops.templating.builtin import mask_phone

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A run that starts and ends with a digit, separators between; its digits are counted afterwards.
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\d(?:[ \t().\-/]{0,2}\d){6,17}(?!\w)")
_DATE_OR_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}.*)?|\d{1,2}[:.]\d{2}(?:[:.]\d{2})?")
_SKIP_KEYS = frozenset({"started_at", "finished_at", "timestamp", "version", "corpus"})


class Redactor:
    """Replaces personal data in corpus lines with pseudonyms that are stable for the Redactor's lifetime."""

    def __init__(self) -> None:
        self._numbers: dict[str, str] = {}  # digits -> pseudonym digits
        self._names: dict[str, str] = {}  # casefolded name or name part -> pseudonym
        self._emails: dict[str, str] = {}
        self._ids: dict[str, str] = {}
        self._messages: dict[str, str] = {}

    def line(self, line: dict[str, Any]) -> dict[str, Any]:
        """A redacted copy of one corpus line (:func:`chatops.replay.corpus.conversation_json`)."""
        head = dict(line["conversation"])
        user_id = str(head["user_id"])
        name = head.get("user_name")
        exact: list[tuple[str, str]] = []  # literal replacements, longest first, before the patterns
        if head["channel"] == "whatsapp" and user_id.isdigit():
            pseudo = self._number(user_id)
            exact += [(user_id, pseudo), (mask_phone(user_id) or "", mask_phone(pseudo) or "")]
        else:
            pseudo = self._id(user_id)
            exact.append((user_id, pseudo))
        head["user_id"] = pseudo
        names = self._name_patterns(name)
        if name:
            head["user_name"] = self._name(name)
        for turn in line["turns"]:
            for message in turn.get("messages") or ():
                exact.append((str(message["id"]), self._message(str(message["id"]))))
        exact = [(old, new) for old, new in exact if old]
        exact.sort(key=lambda pair: -len(pair[0]))

        def text(value: str) -> str:
            for old, new in exact:
                value = value.replace(old, new)
            value = _EMAIL.sub(lambda m: self._email(m.group()), value)
            value = _PHONE.sub(self._phone_in_text, value)
            for pattern, replace in names:
                value = pattern.sub(replace, value)
            return value

        return {**line, "conversation": head, "turns": _walk(line["turns"], text)}

    def _name_patterns(self, name: str | None) -> list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]:
        if not name or not name.strip():
            return []
        whole = name.strip()
        parts = [whole, *(part for part in re.findall(r"[\w'’-]+", whole) if len(part) > 1 and part != whole)]
        patterns: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []
        for part in sorted(set(parts), key=len, reverse=True):
            escaped = re.escape(part)
            # Word boundaries where the name starts/ends with a word character; a name written without spaces
            # around it (CJK) is matched as it stands.
            left = r"(?<!\w)" if re.match(r"\w", part[0]) and part.isascii() else ""
            right = r"(?!\w)" if re.match(r"\w", part[-1]) and part.isascii() else ""
            patterns.append((re.compile(left + escaped + right, re.IGNORECASE), _constant(self._name(part))))
        return patterns

    def _phone_in_text(self, match: re.Match[str]) -> str:
        found = match.group()
        digits = re.sub(r"\D", "", found)
        if _DATE_OR_TIME.fullmatch(found) or not 7 <= len(digits) <= 15:
            return found
        if found.startswith("00"):
            digits = digits[2:]
        pseudo = self._number(digits)
        return ("+" + pseudo) if found.startswith(("+", "00")) else pseudo

    def _number(self, digits: str) -> str:
        if digits not in self._numbers:
            # 1555 is the reserved fictional prefix; the counter keeps pseudonyms distinct.
            self._numbers[digits] = f"1555{len(self._numbers) + 1:07d}"
        return self._numbers[digits]

    def _name(self, name: str) -> str:
        key = name.casefold()
        if key not in self._names:
            self._names[key] = f"Person {len(self._names) + 1}"
        return self._names[key]

    def _email(self, address: str) -> str:
        key = address.casefold()
        if key not in self._emails:
            self._emails[key] = f"person-{len(self._emails) + 1}@example.invalid"
        return self._emails[key]

    def _id(self, value: str) -> str:
        if value not in self._ids:
            self._ids[value] = f"user-{len(self._ids) + 1}"
        return self._ids[value]

    def _message(self, value: str) -> str:
        if value not in self._messages:
            self._messages[value] = f"msg-{len(self._messages) + 1}"
        return self._messages[value]


def _constant(text: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: text


def _walk(value: Any, text: Callable[[str], str], key: str | None = None) -> Any:
    """``value`` with ``text`` applied to every string inside it (mapping keys are structure: kept); times kept."""
    if isinstance(value, str):
        return value if key in _SKIP_KEYS else text(value)
    if isinstance(value, dict):
        return {k: _walk(v, text, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, text, key) for v in value]
    return value
