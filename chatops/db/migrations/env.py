"""Alembic environment: run by chatops.db.migrate with a connection (online) or a URL (``--sql``, offline).

Batch mode is on for every database so that the same scripts alter SQLite tables (by copy) and PostgreSQL
tables (in place).
"""

from alembic import context

from chatops.db.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    context.configure(
        url=config.attributes["url"],
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
