"""Alembic migration scripts, packaged with chatops (no alembic.ini: chatops.db.migrate configures Alembic)."""
