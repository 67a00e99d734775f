"""Reading conversation test files and checking them against the bot before anything runs.

Every problem is collected (not only the first) and reported like a stages.yaml error: ``file:line:col: what.
Hint: …``, with did-you-mean for keys, stage names, state names, buttons and providers.
Raises :class:`TestFileError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chatops.config.bot_schema import BotDefinition, did_you_mean
from chatops.config.schedule import InvalidValue, parse_duration
from chatops.config.yaml_source import Path_, SourceLocation, YamlSource, YamlSourceError, parse_yaml
from chatops.convtest.cases import ACTIONS, EXPECT_KEYS, LATE_KEY, Case, Expectation, Step, TestFile
from chatops.errors import ChatopsError

CASE_KEYS = ("name", "channel", "user", "start", "providers", "steps")
USER_KEYS = ("name", "locale")
STEP_KEYS = (*ACTIONS, LATE_KEY, "expect")
TEST_FILE_SUFFIXES = (".yaml", ".yml")
MAX_STEPS = 200  # per case: a test is a conversation, not a load test


class TestFileError(ChatopsError):
    """One or more conversation test files are invalid; ``problems`` are the located lines, in file order."""

    __test__ = False  # not a pytest class

    def __init__(self, problems: Sequence[str]) -> None:
        count = len(problems)
        more = f"\n({count} problems)" if count > 1 else ""
        super().__init__("\n".join(problems) + more)
        self.problems = list(problems)


def find_test_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, or found (recursively, sorted) in the folders named. Raises TestFileError."""
    found: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in TEST_FILE_SUFFIXES and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    if problems:
        raise TestFileError(problems)
    return list(dict.fromkeys(found))


def load_test_files(paths: Sequence[Path], bot: BotDefinition) -> list[TestFile]:
    """Parse and check every file in ``paths`` against ``bot``. Raises TestFileError listing every problem."""
    problems: list[str] = []
    files = []
    for path in paths:
        checker = _FileChecker(path, bot)
        files.append(checker.load())
        problems.extend(text for *_, text in sorted(checker.problems, key=lambda problem: problem[:2]))
    if problems:
        raise TestFileError(problems)
    return files


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (what annotations and editors want)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _FileChecker:
    """Builds one TestFile, collecting located problems instead of stopping at the first."""

    def __init__(self, path: Path, bot: BotDefinition) -> None:
        self.path = path
        self.bot = bot
        self.display = display_path(path)
        self.problems: list[tuple[int, int, str]] = []  # (line, col, text): reported in file order
        self.source: YamlSource | None = None
        self.state_names = _state_names(bot)
        self.button_ids = sorted({button.id for stage in bot.stages.values() for button in stage.buttons})

    def load(self) -> TestFile:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append((0, 0, f"{self.display}: cannot read: {exc}"))
            text = ""
        try:
            self.source = parse_yaml(text, file=self.display)
        except YamlSourceError as exc:
            location = f"{self.display}:{exc.line}:{exc.col}"
            self.problems.append((exc.line, exc.col, self._line(location, exc.message, exc.hint)))
            self.source = parse_yaml("[]", file=self.display)
        test_file = TestFile(self.path, self.display, self.source)
        data = self.source.data
        if data is None:
            data = []
        if not isinstance(data, list):
            self._problem((), "a conversation test file is a list of cases", "start each case with '- name: …'")
            return test_file
        names: dict[str, int] = {}
        for index, item in enumerate(data):
            case = self._case(test_file, index, item)
            if case is None:
                continue
            if case.name in names:
                self._problem(
                    (index, "name"), f"duplicate case name '{case.name}'", f"case {names[case.name] + 1} has it too"
                )
            names[case.name] = index
            test_file.cases.append(case)
        return test_file

    # -- cases and steps ---------------------------------------------------------------------------------------

    def _case(self, test_file: TestFile, index: int, item: Any) -> Case | None:
        path: Path_ = (index,)
        if not self._mapping(path, item, "a case", CASE_KEYS):
            return None
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            self._problem(path, "a case needs a name", "name: greeting then opening hours")
            name = f"case {index + 1}"
        channel = item.get("channel", "whatsapp")
        if channel not in ("whatsapp", "messenger"):
            self._problem((*path, "channel"), f"unknown channel {channel!r}", "whatsapp or messenger")
            channel = "whatsapp"
        user = item.get("user", {})
        user_name: str | None = "Alex"
        locale = None
        if self._mapping((*path, "user"), user, "user", USER_KEYS):
            user_name = _text_or_none(user.get("name", user_name))
            locale = _text_or_none(user.get("locale"))
        start = self._start((*path, "start"), item.get("start"))
        providers = self._providers((*path, "providers"), item.get("providers", {}))
        steps_data = item.get("steps")
        steps: list[Step] = []
        if not isinstance(steps_data, list) or not steps_data:
            self._problem((*path, "steps") if "steps" in item else path, "a case needs steps (a list)", _STEP_HINT)
        elif len(steps_data) > MAX_STEPS:
            self._problem((*path, "steps"), f"{len(steps_data)} steps; a case has at most {MAX_STEPS}")
        else:
            for number, step in enumerate(steps_data, start=1):
                built = self._step((*path, "steps", number - 1), number, step)
                if built is not None:
                    steps.append(built)
        return Case(
            name=name.strip(),
            file=test_file,
            where=self._where(path),
            channel=channel,
            user_name=user_name,
            locale=locale,
            start=start,
            providers=providers,
            steps=tuple(steps),
        )

    def _start(self, path: Path_, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value).strip())
        except ValueError:
            self._problem(path, f"start: expected an ISO 8601 time, got {value!r}", "e.g. start: 2026-03-02T10:00")
            return None

    def _providers(self, path: Path_, value: Any) -> dict[str, dict[str, Any]]:
        declared = {spec.name: spec for spec in self.bot.providers}
        if not self._mapping(path, value, "providers", None):
            return {}
        stubs: dict[str, dict[str, Any]] = {}
        for name, values in value.items():
            if name not in declared:
                self._problem((*path, name), f"unknown provider '{name}'", did_you_mean(name, declared), key=True)
                continue
            if not self._mapping((*path, name), values, f"provider '{name}'", None):
                continue
            provides = list(declared[name].provides)
            missing = [field for field in provides if field not in values]
            for field in values:
                if field not in provides:
                    hint = did_you_mean(field, provides, label=f"'{name}' provides")
                    self._problem((*path, name, field), f"provider '{name}' does not provide '{field}'", hint, key=True)
            if missing:
                self._problem((*path, name), f"provider '{name}' stub misses {', '.join(missing)}", "give every name")
            stubs[name] = dict(values)
        return stubs

    def _step(self, path: Path_, number: int, item: Any) -> Step | None:
        if not self._mapping(path, item, "a step", STEP_KEYS, hint=_STEP_HINT):
            return None
        actions = [key for key in ACTIONS if key in item]
        if len(actions) != 1:
            what = "no action" if not actions else f"{' and '.join(actions)}"
            self._problem(path, f"step {number}: {what}; a step is exactly one of {', '.join(ACTIONS)}", _STEP_HINT)
            return None
        action = actions[0]
        value = self._action((*path, action), action, item[action])
        if value is None:
            return None
        late = self._late((*path, LATE_KEY), item[LATE_KEY], action) if LATE_KEY in item else None
        expectations = self._expect((*path, "expect"), item.get("expect"), action)
        where = self._where((*path, action), key=True)
        return Step(number, action, value, where, path, tuple(expectations), answered_after=late)

    def _late(self, path: Path_, value: Any, action: str) -> timedelta | None:
        if action == "wait":
            hint = f"e.g. '- user: hi' with '{LATE_KEY}: 25h'"
            self._problem(path, f"{LATE_KEY}: only a message is answered, not a wait", hint, key=True)
            return None
        try:
            return parse_duration(value)
        except InvalidValue as exc:
            self._problem(path, f"{LATE_KEY}: {exc.message}", exc.hint)
            return None

    def _action(self, path: Path_, action: str, value: Any) -> Any:
        if action == "wait":
            try:
                return parse_duration(value)
            except InvalidValue as exc:
                self._problem(path, f"wait: {exc.message}", exc.hint)
                return None
        if action == "location":
            return self._location(path, value)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
            self._problem(path, f"{action}: expected text, got {_shown(value)}")
            return None
        if action in ("button", "choose") and str(value) not in self.button_ids:
            self._problem(
                path, f"{action}: no stage offers a button '{value}'", did_you_mean(str(value), self.button_ids)
            )
        return str(value)

    def _location(self, path: Path_, value: Any) -> tuple[float, float] | None:
        try:
            if isinstance(value, dict):
                latitude, longitude = float(value["lat"]), float(value["lon"])
            else:
                latitude, longitude = (float(part) for part in str(value).replace(" ", "").split(","))
        except (KeyError, TypeError, ValueError):
            self._problem(path, f"location: expected LAT,LON or {{lat: …, lon: …}}, got {_shown(value)}", None)
            return None
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            self._problem(path, "location: out of range (latitude -90..90, longitude -180..180)")
            return None
        return latitude, longitude

    # -- expectations ------------------------------------------------------------------------------------------

    def _expect(self, path: Path_, value: Any, action: str) -> list[Expectation]:
        if value is None:
            return []
        if not isinstance(value, dict):
            self._mapping(path, value, "expect", EXPECT_KEYS)
            return []
        self._mapping(path, value, "expect", EXPECT_KEYS)  # unknown keys reported; the known ones still checked
        built = []
        for key in EXPECT_KEYS:
            if key not in value:
                continue
            checked = self._expected((*path, key), key, value[key])
            if checked is not _INVALID:
                built.append(Expectation(key, checked, self._where((*path, key), key=True), (*path, key)))
        return built

    def _expected(self, path: Path_, key: str, value: Any) -> Any:
        """``value`` checked (and normalised) for ``key``, or _INVALID after recording the problem."""
        if key == "stage":
            if value not in self.bot.stages:
                self._problem(path, f"unknown stage '{value}'", did_you_mean(str(value), self.bot.stages))
                return _INVALID
            return value
        if key in ("state", "state_contains"):
            if not self._mapping(path, value, key, None):
                return _INVALID
            for name in value:  # a bot with `set:` written in templates or plug-ins may keep others: still a typo
                if name not in self.state_names:
                    hint = did_you_mean(str(name), self.state_names, label="kept by the bot")
                    self._problem((*path, name), f"the bot never keeps a state value '{name}'", hint, key=True)
            return dict(value)
        if key in ("reply", "reply_contains", "reply_not_contains", "buttons"):
            items = value if isinstance(value, list) else [value]
            if key not in ("reply", "buttons") and not items:  # `buttons: []`: none offered
                self._problem(path, f"{key}: expected text or a list of texts, got an empty list")
                return _INVALID
            if not all(isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in items):
                self._problem(path, f"{key}: expected text or a list of texts, got {_shown(value)}")
                return _INVALID
            return [str(item) for item in items]
        if key == "reply_regex":
            try:
                re.compile(str(value))
            except re.error as exc:
                self._problem(path, f"reply_regex: {exc}", "quote the pattern in single quotes")
                return _INVALID
            return str(value)
        if key in ("reply_count", "max_length"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self._problem(path, f"{key}: expected a whole number (0 or more), got {_shown(value)}")
                return _INVALID
            return value
        if key in ("handoff", "ai_called"):
            if not isinstance(value, bool):
                self._problem(path, f"{key}: expected true or false, got {_shown(value)}")
                return _INVALID
            return value
        if key in ("error", "window_template"):
            if not isinstance(value, (bool, str)):
                self._problem(path, f"{key}: expected true, false or the text it contains, got {_shown(value)}")
                return _INVALID
            return value
        if key == "similar_to":
            return self._similar(path, value)
        if not isinstance(value, str) or not value.strip():  # judge
            self._problem(path, "judge: expected a rubric (text)", "judge: answers politely and names the hours")
            return _INVALID
        return value

    def _similar(self, path: Path_, value: Any) -> Any:
        if isinstance(value, str):
            return {"text": value, "threshold": DEFAULT_SIMILARITY}
        if not self._mapping(path, value, "similar_to", ("text", "threshold")) or "text" not in value:
            if isinstance(value, dict):
                self._problem(path, "similar_to needs text", "similar_to: {text: …, threshold: 0.8}")
            return _INVALID
        threshold = value.get("threshold", DEFAULT_SIMILARITY)
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
            self._problem((*path, "threshold"), f"threshold: expected a number from 0 to 1, got {_shown(threshold)}")
            return _INVALID
        return {"text": str(value["text"]), "threshold": float(threshold)}

    # -- reporting ---------------------------------------------------------------------------------------------

    def _mapping(
        self, path: Path_, value: Any, what: str, allowed: Sequence[str] | None, *, hint: str | None = None
    ) -> bool:
        if not isinstance(value, dict):
            self._problem(path, f"{what}: expected a mapping, got {_shown(value)}", hint)
            return False
        if allowed is None:
            return True
        for key in value:
            if key not in allowed:
                advice = did_you_mean(str(key), allowed, label="allowed keys")
                self._problem((*path, key), f"unknown key '{key}' in {what}", advice, key=True)
        return all(key in allowed for key in value)

    def _problem(self, path: Path_, message: str, hint: str | None = None, *, key: bool = False) -> None:
        where = self._where(path, key=key)
        self.problems.append((where.line, where.col, self._line(str(where), message, hint)))

    def _where(self, path: Path_, *, key: bool = False) -> SourceLocation:
        assert self.source is not None
        return self.source.location(path, key=key)

    @staticmethod
    def _line(location: str, message: str, hint: str | None) -> str:
        return f"{location}: {message}" + (f". Hint: {hint}" if hint else "")


DEFAULT_SIMILARITY = 0.8
_INVALID = object()
_STEP_HINT = "a step is e.g. '- user: hi' with 'expect: {stage: triage}'"


def _state_names(bot: BotDefinition) -> list[str]:
    """Every name the bot can keep in conversation memory: ``set:`` keys and ``extract:`` fields."""
    names: set[str] = set()
    for stage in bot.stages.values():
        names.update(stage.assign)
        names.update(stage.extract)
        for transition in stage.transitions:
            names.update(transition.assign)
    return sorted(names)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
