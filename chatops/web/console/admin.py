"""Admin pages: staff accounts, API keys and the audit log (the same library functions as ``chatops users``,
``chatops keys`` and ``/api/v1/keys``, ``/api/v1/audit``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from chatops.db import api_keys, audit, staff
from chatops.errors import ChatopsError
from chatops.web.auth import Role
from chatops.web.console.sessions import record, staff_required
from chatops.web.state import web_state

ROLES = ("viewer", "operator", "admin")


@staff_required(Role.ADMIN)
def staff_page() -> str:
    """Every staff account with forms to add one and to change role, disable, or end sessions."""
    return render_template("console/staff.html", accounts=staff.list_accounts(web_state(current_app).db), roles=ROLES)


def _done(action: str, target: str, message: str, **details: Any) -> None:
    record(action, target, "ok", **details)
    flash(message, "ok")


def _refused(action: str, target: str, exc: ChatopsError) -> None:
    record(action, target, "rejected", message=exc.message)
    flash(exc.message + (f" {exc.hint}" if exc.hint else ""), "error")


@staff_required(Role.ADMIN)
def staff_create() -> BaseResponse:
    state = web_state(current_app)
    email = request.form.get("email", "")
    role = request.form.get("role", "")
    try:
        account = staff.create_account(
            state.db, email=email, password=request.form.get("password", ""), role=role, now=state.clock()
        )
    except ChatopsError as exc:
        _refused("console.staff_create", email, exc)
    else:
        _done("console.staff_create", account.email, f"Created {account.email} ({account.role}).", role=role)
    return redirect(url_for("console.staff_page"))


@staff_required(Role.ADMIN)
def staff_update(email: str) -> BaseResponse:
    """Change role or disabled flag (either ends the account's sessions), or only end its sessions."""
    state = web_state(current_app)
    what = request.form.get("action", "")
    try:
        if what == "logout":
            count = staff.end_all_sessions(state.db, email, now=state.clock())
            _done("console.staff_logout", email, f"Ended {count} session(s) of {email}.", sessions=count)
        elif what in ("disable", "enable"):
            staff.update_account(state.db, email, now=state.clock(), disabled=what == "disable")
            _done(f"console.staff_{what}", email, f"{email} is {what}d.")
        elif what == "role":
            role = request.form.get("role", "")
            staff.update_account(state.db, email, now=state.clock(), role=role)
            _done("console.staff_role", email, f"{email} is {role} now.", role=role)
        else:
            raise ChatopsError(f"unknown action {what!r}")
    except ChatopsError as exc:
        _refused(f"console.staff_{what or 'update'}", email, exc)
    return redirect(url_for("console.staff_page"))


@staff_required(Role.ADMIN)
def keys_page() -> str:
    state = web_state(current_app)
    now = state.clock()
    keys = [(key, key.status(now)) for key in api_keys.list_keys(state.db)]
    return render_template("console/keys.html", keys=keys, roles=ROLES, secret=None)


@staff_required(Role.ADMIN)
def keys_create() -> BaseResponse | str:
    """Create a key and show its secret once, on this answer only."""
    state = web_state(current_app)
    name = request.form.get("name", "").strip()
    role = request.form.get("role", "")
    try:
        if not name:
            raise ChatopsError("an API key needs a name")
        new = api_keys.create_key(state.db, name=name, role=role, now=state.clock())  # type: ignore[arg-type]
    except ChatopsError as exc:
        _refused("console.keys_create", name, exc)
        return redirect(url_for("console.keys_page"))
    record("console.keys_create", name, "ok", role=role)
    now = state.clock()
    keys = [(key, key.status(now)) for key in api_keys.list_keys(state.db)]
    return render_template("console/keys.html", keys=keys, roles=ROLES, secret=new.secret, secret_name=name)


@staff_required(Role.ADMIN)
def keys_rotate(name: str) -> BaseResponse | str:
    """Give a key a new secret (the old one stops working at once) and show it once."""
    state = web_state(current_app)
    try:
        new = api_keys.rotate_key(state.db, name, now=state.clock())
    except ChatopsError as exc:
        _refused("console.keys_rotate", name, exc)
        return redirect(url_for("console.keys_page"))
    record("console.keys_rotate", name, "ok")
    now = state.clock()
    keys = [(key, key.status(now)) for key in api_keys.list_keys(state.db)]
    return render_template("console/keys.html", keys=keys, roles=ROLES, secret=new.secret, secret_name=name)


@staff_required(Role.ADMIN)
def keys_revoke(name: str) -> BaseResponse:
    state = web_state(current_app)
    try:
        api_keys.revoke_key(state.db, name, now=state.clock())
    except ChatopsError as exc:
        _refused("console.keys_revoke", name, exc)
    else:
        _done("console.keys_revoke", name, f"Revoked API key {name!r}.")
    return redirect(url_for("console.keys_page"))


@staff_required(Role.ADMIN)
def audit_page() -> str:
    """The audit log, newest first, 100 a page (``?before=<id>`` pages on), filtered by actor."""
    before = request.args.get("before", type=int)
    actor = request.args.get("actor") or None
    entries = audit.list_entries(web_state(current_app).db, limit=100, before_id=before, actor=actor)
    return render_template("console/audit.html", entries=entries, actor=actor or "")


def register(blueprint: Blueprint) -> None:
    blueprint.add_url_rule("/admin/staff", "staff_page", staff_page)
    blueprint.add_url_rule("/admin/staff", "staff_create", staff_create, methods=["POST"])
    blueprint.add_url_rule("/admin/staff/<email>", "staff_update", staff_update, methods=["POST"])
    blueprint.add_url_rule("/admin/keys", "keys_page", keys_page)
    blueprint.add_url_rule("/admin/keys", "keys_create", keys_create, methods=["POST"])
    blueprint.add_url_rule("/admin/keys/<name>/rotate", "keys_rotate", keys_rotate, methods=["POST"])
    blueprint.add_url_rule("/admin/keys/<name>/revoke", "keys_revoke", keys_revoke, methods=["POST"])
    blueprint.add_url_rule("/admin/audit", "audit_page", audit_page)
