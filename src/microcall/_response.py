"""The response a call returns: status, headers, body, and the attempts behind it."""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from typing import Any

from yarl import URL

from microcall._attempt import Attempt
from microcall._request import Request
from microcall.errors import HTTPStatusError


class Response:
    """An HTTP response, fully read.

    ``elapsed`` covers the whole logical call (every attempt and wait), and
    ``attempts`` lists each attempt made, the winning one included.
    """

    # "__dict__" keeps requests' habit working: a hook may attach its own
    # attributes (``response.data = response.json()``).
    __slots__ = (
        "__dict__",
        "attempts",
        "content",
        "elapsed",
        "headers",
        "reason",
        "request",
        "status_code",
        "url",
    )

    def __init__(
        self,
        *,
        status_code: int,
        headers: Mapping[str, str],
        content: bytes,
        url: URL,
        request: Request,
        reason: str = "",
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.url = url
        self.request = request
        self.reason = reason
        self.elapsed = 0.0
        self.attempts: tuple[Attempt, ...] = ()

    @property
    def ok(self) -> bool:
        """True for a status below 400."""
        return self.status_code < 400

    @property
    def encoding(self) -> str:
        """The charset named by Content-Type, or utf-8."""
        content_type = self.headers.get("Content-Type", "")
        for part in content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"').strip()
        return "utf-8"

    @property
    def text(self) -> str:
        """The body decoded with :attr:`encoding` (undecodable bytes replaced)."""
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:  # an unknown charset name from the network
            return self.content.decode("utf-8", errors="replace")

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON (``json.loads`` keyword arguments pass through)."""
        return _json.loads(self.content, **kwargs)

    def raise_for_status(self) -> Response:
        """Raise HTTPStatusError for a 4xx or 5xx status; return self otherwise."""
        if self.status_code >= 400:
            kind = "client error" if self.status_code < 500 else "server error"
            raise HTTPStatusError(
                f"{self.status_code} {self.reason} ({kind}) for {self.request!r}".replace(
                    "  ", " "
                ),
                response=self,
            )
        return self

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"
