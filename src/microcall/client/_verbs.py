"""The HTTP verbs, written once for all three front doors.

Each front door implements ``request``; its result type ``R`` is a coroutine
(AsyncClient), a Response (Client) or a Future (FuturesClient).
"""

from __future__ import annotations

from typing import Generic, TypeVar, Unpack

from yarl import URL

from microcall.client._options import CallOptions

R = TypeVar("R", covariant=True)


class Verbs(Generic[R]):
    def request(self, method: str, url: str | URL, **options: Unpack[CallOptions]) -> R:
        raise NotImplementedError

    def get(self, url: str | URL, **options: Unpack[CallOptions]) -> R:
        """GET ``url`` (relative to the client's base_url, or absolute)."""
        return self.request("GET", url, **options)

    def head(self, url: str | URL, **options: Unpack[CallOptions]) -> R:
        return self.request("HEAD", url, **options)

    def options(self, url: str | URL, **options: Unpack[CallOptions]) -> R:
        return self.request("OPTIONS", url, **options)

    def post(self, url: str | URL, **options: Unpack[CallOptions]) -> R:
        """POST: sent once unless ``idempotent=True`` or an Idempotency-Key header is given."""
        return self.request("POST", url, **options)

    def put(self, url: str | URL, **options: Unpack[CallOptions]) -> R:
        return self.request("PUT", url, **options)

    def patch(self, url: str | URL, **options: Unpack[CallOptions]) -> R:
        return self.request("PATCH", url, **options)

    def delete(self, url: str | URL, **options: Unpack[CallOptions]) -> R:
        return self.request("DELETE", url, **options)
