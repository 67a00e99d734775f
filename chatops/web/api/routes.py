"""How an admin API route is declared: :func:`operation` puts the role, the request validation and the OpenAPI
description on a view in one decorator.

Order of work for a request: authenticate and authorise (401/403, rate limits) first, then validate the request
(422), then the view. So a caller without a key learns nothing about the parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.request import validate_request
from pydantic import BaseModel

from chatops.web.api.models import ErrorBody
from chatops.web.auth import Role, requires

F = TypeVar("F", bound=Callable[..., Any])

ERRORS: dict[int, type[BaseModel]] = {
    400: ErrorBody,
    401: ErrorBody,
    403: ErrorBody,
    404: ErrorBody,
    422: ErrorBody,
    429: ErrorBody,
    503: ErrorBody,
}


def operation(
    blueprint: APIBlueprint,
    method: str,
    rule: str,
    role: Role,
    *,
    answer: type[BaseModel],
    status: int = 200,
    conflicts: bool = False,
) -> Callable[[F], F]:
    """Register ``view`` at ``method rule`` for keys of ``role`` and above; ``answer`` is the success body.

    The view's docstring becomes the summary (first line) and description. ``conflicts`` documents a 409.
    The OpenAPI operation carries ``x-required-role``: the role tests read to try every role on every route.
    """

    def decorate(view: F) -> F:
        responses: dict[int, type[BaseModel]] = {status: answer, **ERRORS}
        if conflicts:
            responses[409] = ErrorBody
        doc = (view.__doc__ or "").strip()
        summary, _, description = doc.partition("\n")
        register = getattr(blueprint, method)
        validated = validate_request()(view)  # type: ignore[no-untyped-call]  # flask-openapi3 leaves it untyped
        guarded = requires(role)(validated)
        register(
            rule,
            summary=summary,
            description=description.strip() or None,
            responses=responses,
            openapi_extensions={"x-required-role": role.value},
            operation_id=view.__name__,
            security=[{"bearer": []}],
        )(guarded)
        return view

    return decorate
