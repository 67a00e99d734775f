"""``chatops simulate``: a user's message through the real webhook route and the real worker, on a laptop.

:meth:`Simulator.send` does what Meta and a server would do, with nothing re-implemented::

    build the webhook body Meta would send (fresh message id, the clock's timestamp) ─▶ sign its exact bytes ─▶
    POST it through the Flask test client of ``create_app`` (signature check, parser, inbox) ─▶
    ``Worker.work_once()`` until the message is answered or nothing is due ─▶ read the turns it produced ─▶
    settle their outbound rows: ``sent`` with provider id ``simulated.<row id>`` (``failed`` when the sender
    would refuse them)

Nothing reaches Meta: settled rows are never ``pending``, so no sender, now or later, delivers them. When the
channel has no app secret configured, an ephemeral random one (and placeholder tokens, so the channel is enabled)
serves the in-process app only. :func:`send_to_server` posts the same signed body to a running server instead.

Modules: ``bodies`` (webhook JSON, pure), ``results`` (what a message did), ``records`` (reading and settling it
in the database), ``inprocess`` (:class:`Simulator`), ``remote`` (:func:`send_to_server`). docs/simulate.md is
the user's guide.
"""

from __future__ import annotations

from chatops.web.simulator.bodies import SIMULATED_PREFIX, ButtonOffer, UserInput, build_webhook
from chatops.web.simulator.inprocess import (
    DEFAULT_USER_ID,
    DEFAULT_USER_NAME,
    SimulatedUser,
    Simulator,
    frozen_clock,
    prepare_schema,
    simulation_settings,
)
from chatops.web.simulator.records import SIMULATED_ACCOUNT_IDS, UserConversation, account_id_for
from chatops.web.simulator.remote import DEFAULT_POLL_TIMEOUT, send_to_server
from chatops.web.simulator.results import SimulatedReply, SimulatedTurn, SimulationResult

__all__ = [
    "DEFAULT_POLL_TIMEOUT",
    "DEFAULT_USER_ID",
    "DEFAULT_USER_NAME",
    "SIMULATED_ACCOUNT_IDS",
    "SIMULATED_PREFIX",
    "ButtonOffer",
    "SimulatedReply",
    "SimulatedTurn",
    "SimulatedUser",
    "SimulationResult",
    "Simulator",
    "UserConversation",
    "UserInput",
    "account_id_for",
    "build_webhook",
    "frozen_clock",
    "prepare_schema",
    "send_to_server",
    "simulation_settings",
]
