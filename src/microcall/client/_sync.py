"""Client: the blocking front door, requests-like, safe to share between threads."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Unpack

from yarl import URL

from microcall._closing import closed_in_flight
from microcall._durations import Seconds
from microcall._response import Response
from microcall._stream import AsyncStreamResponse
from microcall.client._blocking import BlockingFrontDoor
from microcall.client._direct import call_direct, direct_pool
from microcall.client._event_hooks import apply_response_hooks
from microcall.client._options import BaseURL, CallOptions, ClientOptions
from microcall.client._stream import StreamCall
from microcall.client._verbs import Verbs
from microcall.errors import CallError, UsageError


class Client(BlockingFrontDoor, Verbs[Response]):
    """Calls other services from ordinary (blocking) code.

    ::

        with microcall.Client("http://catalog:8080", timeout=2.0,
                              strategy=microcall.retry(3)) as client:
            books = client.get("/books").raise_for_status().json()

    Unlike ``requests.Session`` a Client is safe to share between threads, and
    they all reuse one pool of keep-alive connections. The calls run on an
    event loop in a background thread, except plain calls (attempts one after
    another, a small body, no stream, cache, cookies or auth), which run in
    the calling thread on blocking sockets of their own pool (docs/clients.md); either
    way a deadline or priority set in the calling thread goes with them.
    Hooks (``hooks=``) are plain functions: response hooks run in the
    calling thread, request hooks on the loop's.
    """

    def __init__(self, base_url: BaseURL | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(base_url, options)
        # Plain calls run in the caller's thread (client/_direct); the rest on the loop.
        self._direct = direct_pool(self._async)

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._direct = direct_pool(self._async)

    def request(self, method: str, url: str | URL, **options: Unpack[CallOptions]) -> Response:
        """Send a call, wait for it, return its response (any status) or raise a CallError."""
        self._check_open()
        if asyncio._get_running_loop() is not None:
            raise UsageError(
                "Client blocks its thread and cannot be called from inside a running event "
                "loop; use microcall.AsyncClient there (response = await client.get(...))"
            )
        response_hooks = self._response_hooks_of(options)
        response = None
        direct = self._direct
        if direct is not None:
            try:
                response = call_direct(self._async, direct, method, url, options)
            except CallError as error:
                if self._closed and error.request is not None:  # shut down by close()
                    raise closed_in_flight(error.request, error.attempts) from error
                raise
        if response is None:
            response = self._loop.run(self._in_loop(method, url, options))
        if response_hooks:  # in the caller's thread: a slow hook holds up no other call
            response = apply_response_hooks(response_hooks, response)
        return response

    async def _in_loop(self, method: str, url: str | URL, options: CallOptions) -> Response:
        # Built inside the loop thread: the engine's shared state (retry budget,
        # replicas) is only ever touched there, whichever threads call.
        return await self._async.request(method, url, **options)

    def stream(
        self,
        method: str,
        url: str | URL,
        *,
        idle_timeout: Seconds | None = None,
        body_timeout: Seconds | None = None,
        **options: Unpack[CallOptions],
    ) -> StreamCall:
        """A call whose body is read as it arrives: ``with client.stream(...) as response``.

        ::

            with client.stream("GET", "/export", idle_timeout=5.0) as response:
                for chunk in response.iter_bytes():
                    sink.write(chunk)

        ``AsyncClient.stream`` run on the client's background loop (the same
        options, time limits and errors); the block gets a
        :class:`~microcall.StreamResponse` once the head has arrived, and
        each piece of the body crosses to this thread as it is read.
        """
        self._check_open()
        if asyncio._get_running_loop() is not None:
            raise UsageError(
                "Client blocks its thread and cannot be called from inside a running event "
                "loop; use microcall.AsyncClient there (async with client.stream(...))"
            )
        opening = partial(self._open_stream, method, url, idle_timeout, body_timeout, options)
        return StreamCall(self._loop, opening)

    async def _open_stream(
        self,
        method: str,
        url: str | URL,
        idle_timeout: Seconds | None,
        body_timeout: Seconds | None,
        options: CallOptions,
    ) -> AsyncStreamResponse:
        # Built inside the loop thread, as a call is (see _in_loop).
        call = self._async.stream(
            method, url, idle_timeout=idle_timeout, body_timeout=body_timeout, **options
        )
        return await call.open()
