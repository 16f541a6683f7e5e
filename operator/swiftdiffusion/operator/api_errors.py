"""API server failures as one readable sentence for conditions, events and logs.

The API server explains a refusal in a `Status` body (`message`, `details.kind/name`,
`details.causes[].field/message`); users read that in `kubectl describe`, not the raw
JSON. Anything that is not a Status body is reduced to its HTTP status and reason.
"""
from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

MAX_MESSAGE = 400


def describe(error: Exception) -> str:
    """One sentence naming the object, the field(s) and the reason; never a raw body."""
    if not isinstance(error, ApiException):
        return shorten(f"{type(error).__name__}: {error}")
    status = _status_body(error.body)
    if status is None:
        return f"API server answered {error.status} {error.reason}".rstrip()
    details = status.get("details") or {}
    subject = " ".join(part for part in (details.get("kind"), details.get("name")) if part) or "the request"
    causes = [_cause(cause) for cause in details.get("causes") or [] if isinstance(cause, dict)]
    reason = "; ".join(c for c in causes if c) or status.get("message") or str(error.reason)
    return shorten(f"{subject} refused ({status.get('reason') or error.status}): {reason}")


def shorten(message: str, limit: int = MAX_MESSAGE) -> str:
    """Cut at a word boundary so a condition stays readable in `kubectl get -o wide`."""
    message = " ".join(message.split())
    if len(message) <= limit:
        return message
    cut = message[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def _status_body(body: Any) -> dict[str, Any] | None:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        parsed = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) and parsed.get("kind") == "Status" else None


def _cause(cause: dict[str, Any]) -> str:
    field, message = cause.get("field"), cause.get("message") or cause.get("reason") or ""
    return f"{field}: {message}" if field else message
