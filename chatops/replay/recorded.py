"""Variable providers that answer with the values a turn recorded, so a replay calls no API or database.

The worker stores every variable a turn used (``turns.variables``); replay hands them back to the same
``ProviderRunner`` through :class:`RecordedProvider`. A turn is found by the conversation id and the turn's index
in it (``conversation.turn_count`` of the replayed conversation), which is unique within a replay.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from chatops.config.bot_schema import ProviderSpec
from chatops.errors import ProviderError
from chatops.templating.providers import ProviderContext


class RecordedValues:
    """The recorded variables of every turn being replayed, by ``(conversation id, turn index)``. Thread-safe."""

    def __init__(self) -> None:
        self._values: dict[tuple[Any, int], Mapping[str, Any]] = {}
        self._lock = threading.Lock()

    def put(self, conversation_id: int, index: int, variables: Mapping[str, Any]) -> None:
        """Remember what turn ``index`` of ``conversation_id`` recorded."""
        with self._lock:
            self._values[(conversation_id, index)] = variables

    def get(self, conversation_id: Any, index: int) -> Mapping[str, Any]:
        """The turn's recorded variables (empty when it recorded none)."""
        with self._lock:
            return self._values.get((conversation_id, index), {})


class RecordedProvider:
    """Stands in for a configured provider: returns its namespace as the replayed turn recorded it.

    Raises ProviderError when the turn did not record it (the original stage did not use it): the candidate then
    answers as it would when the provider fails, and the turn shows the error (``--live-providers`` calls it).
    """

    def __init__(self, spec: ProviderSpec, values: RecordedValues) -> None:
        self._name = spec.name
        self._provides = {name: "" for name in spec.provides}
        self._values = values

    @property
    def name(self) -> str:
        """The provider's name (its namespace in templates)."""
        return self._name

    @property
    def provides(self) -> Mapping[str, str]:
        """The names it provides."""
        return self._provides

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        """The recorded namespace of this provider for the turn being replayed."""
        recorded = self._values.get(context.conversation.id, context.conversation.turn_count).get(self._name)
        if not isinstance(recorded, Mapping):
            raise ProviderError(
                f"provider {self._name!r} was not recorded on this turn (replay with --live-providers to call it)"
            )
        return recorded


def recorded_providers(specs: Sequence[ProviderSpec], values: RecordedValues) -> list[RecordedProvider]:
    """One RecordedProvider per declared provider of the candidate definition."""
    return [RecordedProvider(spec, values) for spec in specs]
