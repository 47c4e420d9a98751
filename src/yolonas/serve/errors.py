"""The one exception the server turns into an HTTP error: a status code and a one-line message, as JSON."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses: `status` (4xx, or 503/504 under load), `message`, and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
