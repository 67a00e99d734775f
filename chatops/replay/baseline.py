"""Saved runs (baselines): ``--save-baseline NAME`` stores what the candidate answered per turn, ``--against NAME``
compares a later candidate with it instead of the recording ("what did my last edit change?").

A baseline is one JSON file, ``<folder>/<NAME>.json`` (default folder ``.chatops/baselines``), holding each turn's
``new`` side by turn key. Turns missing from the baseline are compared with the recording.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from chatops.errors import ChatopsError
from chatops.replay.runner import ReplayedTurn, TurnSide

BASELINE_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class BaselineError(ChatopsError):
    """A baseline name that is not a plain name, or a baseline that does not exist or cannot be read."""


def baseline_path(folder: Path, name: str) -> Path:
    """Where baseline ``name`` lives. Raises BaselineError for a name that is not letters, digits, . _ -."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise BaselineError(f"baseline name {name!r} is not valid", hint="use letters, digits, '.', '_' and '-'")
    return folder / f"{name}.json"


def save_baseline(folder: Path, name: str, turns: Sequence[ReplayedTurn], *, mode: str) -> Path:
    """Write the candidate's side of every turn as baseline ``name``; returns the file written."""
    path = baseline_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "baseline": name,
        "version": BASELINE_VERSION,
        "mode": mode,
        "turns": {turn.key: turn.new.to_json() for turn in turns},
    }
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
    return path


def load_baseline(folder: Path, name: str) -> dict[str, TurnSide]:
    """The saved sides of baseline ``name`` by turn key. Raises BaselineError when absent or unreadable."""
    path = baseline_path(folder, name)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return {key: TurnSide.from_json(side) for key, side in document["turns"].items()}
    except FileNotFoundError:
        known = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        raise BaselineError(
            f"no baseline {name!r} in {folder}",
            hint=("saved baselines: " + ", ".join(known)) if known else "save one with --save-baseline NAME",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BaselineError(f"baseline {path} cannot be read: {exc}") from None
