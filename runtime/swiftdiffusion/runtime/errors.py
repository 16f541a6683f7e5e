"""Request errors that map one-to-one onto gRPC status codes at the servicer edge."""
from __future__ import annotations


class RequestError(Exception):
    """A request that cannot be served as asked."""


class NotFound(RequestError):
    """A named model (ControlNet, LoRA) that this deployment does not know."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"unknown {kind} {name!r}")
        self.kind, self.name = kind, name


class InvalidArgument(RequestError):
    """A request field outside what the service accepts; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Cancelled(RequestError):
    """The client went away; the loop stopped at a step boundary."""


class Unavailable(RequestError):
    """A service this request depends on (the ControlNet service) cannot be reached."""


class DeadlineExceeded(RequestError):
    """The request's deadline passed before its work finished."""


class RemoteStatus(RequestError):
    """A status returned by another service, passed on with its code."""

    def __init__(self, code: object, message: str) -> None:
        super().__init__(message)
        self.code = code
