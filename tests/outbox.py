"""Outbox rows for tests: conversations and outbound messages inserted as the worker would leave them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from chatops.channels.events import Channel, DeliveryStatus, OutboundMessage, StatusUpdate
from chatops.db.tables import conversations, outbound_messages

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
PHONE_ID = "106540352242922"
PAGE_ID = "101234567890123"
WA_TOKEN = "wa-token-1"
PAGE_TOKEN = "page-token-1"

# Seed data and readers ---------------------------------------------------------------------------------------


_user_ids = iter(range(10_000, 100_000))


def add_conversation(
    db: sa.Engine,
    *,
    channel: Channel = "whatsapp",
    user_id: str | None = None,
    last_inbound_at: datetime | None = T0 - timedelta(minutes=5),
) -> int:
    account_id = PHONE_ID if channel == "whatsapp" else PAGE_ID
    with db.begin() as connection:
        return int(
            connection.execute(
                sa.insert(conversations)
                .values(
                    channel=channel,
                    account_id=account_id,
                    user_id=user_id or f"49151{next(_user_ids)}",
                    state={},
                    mode="bot",
                    turn_count=0,
                    last_inbound_at=last_inbound_at,
                    created_at=T0 - timedelta(days=1),
                    updated_at=T0 - timedelta(days=1),
                )
                .returning(conversations.c.id)
            ).scalar_one()
        )


def add_outbound(
    db: sa.Engine,
    conversation_id: int,
    message: OutboundMessage | str = "Hello",
    *,
    reply_to: str | None = None,
    next_attempt_at: datetime = T0,
    status: str = "pending",
    provider_message_id: str | None = None,
    sent_at: datetime | None = None,
) -> int:
    if isinstance(message, str):
        message = OutboundMessage(text=message)
    with db.begin() as connection:
        return int(
            connection.execute(
                sa.insert(outbound_messages)
                .values(
                    conversation_id=conversation_id,
                    body=message.to_json(),
                    reply_to=reply_to,
                    status=status,
                    provider_message_id=provider_message_id,
                    attempts=0,
                    next_attempt_at=next_attempt_at,
                    created_at=T0 - timedelta(seconds=1),
                    updated_at=T0 - timedelta(seconds=1),
                    sent_at=sent_at,
                )
                .returning(outbound_messages.c.id)
            ).scalar_one()
        )


def outbound(db: sa.Engine, row_id: int) -> sa.Row[Any]:
    with db.connect() as connection:
        return connection.execute(sa.select(outbound_messages).where(outbound_messages.c.id == row_id)).one()


def status_update(
    state: DeliveryStatus,
    provider_id: str | None = "wamid.SENT1",
    *,
    channel: Channel = "whatsapp",
    user_id: str = "491510000",
    watermark: datetime | None = None,
    error_code: int | None = None,
    error_title: str | None = None,
    error_details: str | None = None,
) -> StatusUpdate:
    """A delivery status report from Meta for ``provider_id``, stamped T0."""
    return StatusUpdate(
        channel=channel,
        account_id=PHONE_ID if channel == "whatsapp" else PAGE_ID,
        user_id=user_id,
        status=state,
        timestamp=T0,
        provider_message_id=provider_id,
        watermark=watermark,
        error_code=error_code,
        error_title=error_title,
        error_details=error_details,
    )
