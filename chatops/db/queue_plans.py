"""Plans for the queue claims that do not depend on the planner's statistics (PostgreSQL).

The claims read each conversation's oldest pending row from a partial index (the backlog), then look up that row,
its conversation and (for the sender) the message by primary key. How many heads there are is only known when the
claim runs; the statistics may have been taken in a quiet hour (the planner then expects none) or during a backlog
(it then expects thousands and prefers hashing whole tables, which stays the plan after the backlog has drained:
each idle claim would scan the tables). Both were measured (docs/scaling.md), so the claim's transaction tells the
planner to look rows up by index, whatever the estimates: its cost follows the backlog, never the table size.
"""

from __future__ import annotations

import sqlalchemy as sa

# SET LOCAL lasts until the end of the claim's transaction; the other statements of the connection are unaffected.
_INDEX_LOOKUPS_ONLY = (
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
)


def index_lookups_only(connection: sa.Connection) -> None:
    """For the rest of ``connection``'s transaction, plan with index scans and nested loops (one round trip)."""
    connection.exec_driver_sql(_INDEX_LOOKUPS_ONLY)
