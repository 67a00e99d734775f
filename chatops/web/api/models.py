"""The admin API's request and response declarations (pydantic): they validate requests, shape answers and are
the OpenAPI document (flask-openapi3 reads them), so the document cannot drift from the code."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Channel = Literal["whatsapp", "messenger"]
Mode = Literal["bot", "human", "paused"]
RoleName = Literal["viewer", "operator", "admin"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Errors ------------------------------------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str = Field(description="where: body.text, query.limit …")
    message: str


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable: unauthorized, forbidden, not_found, window_closed …")
    message: str
    hint: str | None = None
    fields: list[FieldError] | None = Field(default=None, description="422 only: each invalid field")


class ErrorBody(BaseModel):
    """Every error answer of the admin API."""

    error: ErrorDetail


# Conversations -----------------------------------------------------------------------------------------------


class ConversationQuery(Strict):
    channel: Channel | None = None
    stage: str | None = Field(default=None, max_length=128)
    mode: Mode | None = None
    waiting: bool | None = Field(default=None, description="a person has it and the user wrote last")
    updated_since: datetime | None = Field(default=None, description="ISO 8601 with a time zone")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200, description="next_cursor of the previous page")


MAX_ID = 2**63 - 1  # a BIGINT; a larger id made the SQLite driver raise OverflowError (a 500; schemathesis found it)


class ConversationPath(Strict):
    conversation_id: int = Field(ge=1, le=MAX_ID)


class ConversationSummary(BaseModel):
    id: int
    channel: str
    account_id: str
    user_id: str
    user_name: str | None
    stage: str | None
    mode: str
    turn_count: int
    waiting: bool
    last_inbound_at: datetime | None
    last_operator_at: datetime | None
    handoff_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ConversationList(BaseModel):
    items: list[ConversationSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class Message(BaseModel):
    direction: Literal["in", "out"]
    id: int
    at: datetime
    kind: str
    text: str | None
    status: str = Field(description="in: pending/processing/done/failed/skipped; out: pending … read/failed")
    error: str | None = None
    error_code: int | None = None
    turn_id: int | None = None
    sent_at: datetime | None = None
    sent_by: str | None = Field(default=None, description="the operator (API key name) of an operator message")


class Turn(BaseModel):
    id: int
    started_at: datetime
    finished_at: datetime
    stage_before: str | None
    stage_after: str | None
    user_text: str | None
    model: str | None
    intent: str | None
    ai_response: str | None
    usage: dict[str, Any] | None
    latency_ms: float | None
    template_versions: dict[str, Any]
    bot_version: str | None
    error: str | None


class ConversationDetail(ConversationSummary):
    state: dict[str, Any]
    messages: list[Message]
    turns: list[Turn]


# Keys and audit ----------------------------------------------------------------------------------------------


class KeyInfo(BaseModel):
    name: str
    prefix: str
    role: RoleName
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyList(BaseModel):
    items: list[KeyInfo]


class KeyCreate(Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: RoleName
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class KeyPath(Strict):
    name: str = Field(min_length=1, max_length=128)


class KeyRotate(Strict):
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class KeySecret(BaseModel):
    key: KeyInfo
    secret: str = Field(description="the whole key: shown once, never stored")


class AuditQuery(Strict):
    limit: int = Field(default=50, ge=1, le=500)
    before: int | None = Field(default=None, ge=1, le=MAX_ID, description="id of the last entry of the previous page")
    actor: str | None = Field(default=None, max_length=128)
    action: str | None = Field(default=None, max_length=64)


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str
    client_address: str | None
    details: dict[str, Any] | None


class AuditList(BaseModel):
    items: list[AuditEntry]


# Handoff -----------------------------------------------------------------------------------------------------


class OperatorMessage(Strict):
    text: str | None = Field(default=None, min_length=1, max_length=4096, description="free text (within 24 hours)")
    template: bool = Field(default=False, description="send the bot's whatsapp_template instead (any time)")


class OperatorMessageSent(BaseModel):
    id: int = Field(description="the outbound message's id; its delivery status shows in the conversation")
    conversation_id: int
    status: str
    sent_by: str


class HandBackRequest(Strict):
    stage: str | None = Field(default=None, min_length=1, max_length=128, description="default: the bot's start")


class HandBackDone(BaseModel):
    conversation_id: int
    stage: str
    skipped: int = Field(description="messages that arrived while a person had it, marked skipped")


# Bot and stats -----------------------------------------------------------------------------------------------


class StageInfo(BaseModel):
    name: str
    reply: str | None
    prompt: str | None
    handoff: bool
    targets: list[str]


class BotInfo(BaseModel):
    name: str
    start: str
    version: str = Field(description="content hash of stages.yaml and the templates it uses")
    stages: list[StageInfo]
    templates: dict[str, str] = Field(
        description="template file → version (short sha256 of the file on this host now; `version` is the loaded one)"
    )


class PreviewRequest(Strict):
    template: str = Field(min_length=1, max_length=256, description="a file under templates/, e.g. welcome.j2")
    variables: dict[str, Any] = Field(default_factory=dict, description="sample values: user, order, company …")


class PreviewAnswer(BaseModel):
    template: str
    version: str
    text: str


class ReloadAnswer(BaseModel):
    reload_id: int = Field(description="every process loads the files when it sees this id (within seconds)")
    version: str


class StatsQuery(Strict):
    days: int = Field(default=7, ge=1, le=31)


class DayStats(BaseModel):
    date: str
    messages_in: int
    messages_out: int
    turns: int
    ai_tokens: int
    ai_latency_ms_median: float | None


class WaitingStats(BaseModel):
    conversations: int = Field(description="a person has them and the user wrote last")
    longest_seconds: float | None
    median_seconds: float | None


class Stats(BaseModel):
    days: list[DayStats]
    failures_by_error_code: dict[str, int] = Field(description="failed outbound messages by Graph error code")
    waiting: WaitingStats
