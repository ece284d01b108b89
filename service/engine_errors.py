"""Why the engine did not run a job: its own errors, which know nothing of HTTP (the routes render them)."""

from __future__ import annotations


class EngineError(Exception):
    """A job the engine refused or gave up on; `retry_after` (seconds) says when trying again makes sense."""

    kind = "engine"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after


class NotReady(EngineError):
    """The model is loading, failed to load, or the engine is shutting down."""

    kind = "not-ready"


class Overloaded(EngineError):
    """The queue is full."""

    kind = "overloaded"


class QueueTimeout(EngineError):
    """The job waited longer than the request timeout without reaching the model."""

    kind = "queue-timeout"
