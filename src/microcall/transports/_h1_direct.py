"""HTTP/1.1 on blocking sockets in the caller's thread: the direct path of a Client's plain calls.

Theory of operation. A blocking ``Client`` runs its calls on an event loop in
a background thread; handing each call over and back costs two thread
wake-ups, which on a sequential caller are most of a call's cost
(docs/clients.md). A plain call (one attempt, a small body held in memory,
no stream) needs nothing of a loop, so the transport can also run it where
it is made, on a blocking socket, with the same wire code (``_h1_wire``),
the same redirects (``_h1_redirect``) and the same errors (``_h1_errors``)
as the loop's exchange.

- The pool keeps its own idle sockets per origin (an asyncio transport
  cannot be read from another thread), most recently used first, closed
  once idle longer than ``keepalive_expiry``. It is shared by every calling
  thread under one lock, held only to take or put back a socket.
- ``max_connections`` (and ``max_connections_per_host``) bound the sockets
  in use here, as they bound the loop's pool: a caller finding none free
  waits, within its deadline, for one to come back.
- A reused socket is polled before it is written to: one that the server
  closed, or that holds bytes nobody asked for, is closed and another taken.
  A request that still meets a dead reused socket is sent once more on a
  fresh one under the loop exchange's rule (``h1._worth_resending``).
- Every wait (name lookup, connect, TLS handshake, send, each read) is bound
  by the attempt's time: a server that trickles bytes cannot hold the
  caller past it. A name is looked up in a daemon thread of its own, so
  that a slow resolver is bound by the deadline too (``getaddrinfo`` itself
  cannot be interrupted).
- ``close()`` (the client closing) closes the idle sockets and shuts down
  those in use, so a caller blocked on one wakes at once; callers waiting
  for a free socket, or about to take one, fail with ``ClientClosed``.

A forked child never touches its parent's sockets: the Client builds a new
transport, and so a new pool, in the child (``client/_blocking``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from yarl import URL

from microcall._attempt import mark_resent
from microcall._body import Body
from microcall._limits import Limits
from microcall._request import Request, endpoint_of
from microcall._response import Response
from microcall.errors import ClientClosed
from microcall.transports._h1_conn import ConnectionLost, Origin, worth_resending
from microcall.transports._h1_errors import ConnectFailed, Resent, map_error
from microcall.transports._h1_redirect import REDIRECT_STATUSES, Hop, location_of, next_hop
from microcall.transports._h1_wire import ResponseReader, request_head, whole_response

# Request bodies sent on the direct path at most: the body and head fit in a
# socket's send buffer, so the request is written whole before the answer is
# read, and a server that answers early (a 413) cannot leave it blocked.
# Larger bodies go through the loop, which writes and reads at once.
DIRECT_BODY_MAX = 64 * 1024

# What one read asks for: a small answer arrives in one, and the buffer stays
# under the size where the allocator maps (and unmaps) memory for each read.
_READ_SIZE = 64 * 1024

# A request this small goes into an idle socket's send buffer at once (the
# kernel's smallest is 4 KiB), so its write needs no timeout of its own.
_SMALL_WRITE = 4096

_TIMEVAL = struct.Struct("@ll")


class PoolClosed(Exception):
    """The pool was closed (its client was): nothing more is sent."""


class DirectConnection:
    """One blocking socket to an origin."""

    __slots__ = ("_poll", "idle_since", "key", "sock", "tls", "used")

    def __init__(self, key: Origin, sock: socket.socket) -> None:
        self.key = key
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        if not self.tls:
            sock.settimeout(None)  # blocking: its waits are bound by the kernel (_arm)
        self.used = False
        self.idle_since = 0.0
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def quiet(self) -> bool:
        """Whether nothing arrived while idle: no close, no stray bytes (one poll, no wait)."""
        try:
            return not self._poll.poll(0)
        except (OSError, ValueError):  # closed under us
            return False

    def exchange(self, data: bytes, reader: ResponseReader, deadline: float) -> None:
        """Write ``data`` and read until ``reader`` holds the whole response, by ``deadline``.

        Raises ``ConnectionLost``, ``WireError``, ``TooLarge`` or ``TimeoutError``.
        """
        sock = self.sock
        self.used = True
        written = False
        kernel = not self.tls
        try:
            if kernel:  # the kernel's timeouts: see _arm
                _arm(sock, socket.SO_RCVTIMEO, deadline)
                if len(data) > _SMALL_WRITE:
                    _arm(sock, socket.SO_SNDTIMEO, deadline)
            else:
                sock.settimeout(_left(deadline))
            sock.sendall(data)
            written = True
            while True:
                chunk = sock.recv(_READ_SIZE)
                if not chunk:
                    if reader.eof():
                        return
                    raise ConnectionLost(None, received=reader.received, written=True)
                reader.feed(chunk)
                if reader.complete:
                    return
                if kernel:
                    _arm(sock, socket.SO_RCVTIMEO, deadline)
                else:
                    sock.settimeout(_left(deadline))
        except TimeoutError:
            raise
        except BlockingIOError:  # a kernel timeout ran out
            raise TimeoutError("the attempt's time ran out") from None
        except OSError as error:  # reset, broken pipe, shut down by close()
            raise ConnectionLost(error, received=reader.received, written=written) from error

    def close(self) -> None:
        with contextlib.suppress(OSError):  # closing fails only for a bad descriptor
            self.sock.close()

    def shut(self) -> None:
        """Wake a thread blocked on the socket (from another thread); its owner closes it."""
        with contextlib.suppress(OSError):  # already closed, or never connected
            self.sock.shutdown(socket.SHUT_RDWR)


class DirectPool:
    """Blocking keep-alive sockets per origin, shared by every calling thread."""

    def __init__(
        self,
        limits: Limits,
        context: Callable[[], ssl.SSLContext],
        follow_redirects: bool,
    ) -> None:
        self._limits = limits
        self._context = context
        self._follow = follow_redirects
        self._cap = limits.max_response_size
        self._idle: dict[Origin, list[DirectConnection]] = {}
        self._in_use: set[DirectConnection] = set()
        self._in_use_by: dict[Origin, int] = {}
        self._busy = 0  # slots taken: sockets in use, and those being opened
        self._freed = threading.Condition(threading.Lock())
        self._closed = False

    # ------------------------------------------------------------ the attempt

    def send(
        self, request: Request, url: URL, headers: Mapping[str, str], timeout: float
    ) -> Response:
        """One attempt, with its redirects: the whole response, or a microcall error."""
        deadline = time.monotonic() + timeout
        method, body = request.method, request.body
        visited: list[URL] = []
        follow = self._follow
        try:
            while True:
                reader, resent = self._exchange(request, method, url, headers, body, deadline)
                if not (follow and reader.status in REDIRECT_STATUSES):
                    break
                location = location_of(reader)
                if location is None:
                    break
                hop = Hop(url, method, body, headers, None)
                url, method, body, headers, _ = next_hop(request, reader, location, hop, visited)
            response = whole_response(request, url, reader, self._cap)
        except PoolClosed:
            raise ClientClosed(
                f"the client was closed: {request.endpoint} not sent to", request=request
            ) from None
        except Exception as exc:
            mapped = map_error(exc, request, endpoint_of(url))
            if mapped is None:
                raise
            raise mapped from exc
        if resent:
            mark_resent(response)
        return response

    def _exchange(
        self,
        request: Request,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | Body | None,
        deadline: float,
    ) -> tuple[ResponseReader, bool]:
        """One request on the wire, sent once more on a fresh socket if the reused one was dead."""
        assert body is None or type(body) is bytes  # the direct path's bodies (see DIRECT_BODY_MAX)
        head = request_head(
            method, url.raw_path_qs, url.host_port_subcomponent or "", headers, body
        )
        data = head + body if body else head
        key = Origin(url.scheme, url.host or "", url.port or 0, None)
        head_only = method == "HEAD"
        conn = self._acquire(key, deadline, fresh=False)
        reused = conn.used
        reader = ResponseReader(head_only, self._cap)
        try:
            conn.exchange(data, reader, deadline)
        except ConnectionLost as lost:
            self._release(conn, False)
            if not (reused and worth_resending(lost, request, body)):
                raise
        except BaseException:
            self._release(conn, False)  # cut mid-exchange: the socket cannot carry another
            raise
        else:
            self._release(conn, reader.reusable)
            return reader, False
        conn = self._acquire(key, deadline, fresh=True)
        reader = ResponseReader(head_only, self._cap)
        try:
            conn.exchange(data, reader, deadline)
        except BaseException as error:
            self._release(conn, False)
            if isinstance(error, Exception):
                raise Resent(error) from error
            raise
        self._release(conn, reader.reusable)
        return reader, True

    # ------------------------------------------------------------ the pool

    def _acquire(self, key: Origin, deadline: float, *, fresh: bool) -> DirectConnection:
        """A socket to ``key`` with its slot taken: an idle one (unless ``fresh``), else a new one."""
        freed = self._freed
        with freed:
            while not self._has_slot(key):
                if self._closed:
                    raise PoolClosed
                if not freed.wait(_left(deadline)):
                    raise TimeoutError("no connection free in time")
            if self._closed:
                raise PoolClosed
            self._take_slot(key)
            idle = self._idle.get(key)
            stale: list[DirectConnection] = []
            conn = None
            if idle:
                if fresh:  # as old as the one just found dead
                    stale.extend(idle)
                    idle.clear()
                else:
                    now = time.monotonic()
                    while idle:
                        candidate = idle.pop()
                        if now - candidate.idle_since <= self._limits.keepalive_expiry:
                            conn = candidate
                            break
                        stale.append(candidate)
            if conn is not None:
                self._in_use.add(conn)
        for old in stale:
            old.close()
        if conn is not None and conn.quiet():
            return conn
        if conn is not None:  # closed by the server while idle, or holding stray bytes
            with freed:
                self._in_use.discard(conn)
            conn.close()
        try:
            conn = DirectConnection(key, self._open(key, deadline))
        except BaseException:
            with freed:
                self._give_slot(key)
            raise
        with freed:
            if self.closed:  # while it was opening
                self._give_slot(key)
                conn.close()
                raise PoolClosed
            self._in_use.add(conn)
        return conn

    def _release(self, conn: DirectConnection, reusable: bool) -> None:
        """Give ``conn``'s slot back; keep it for reuse if ``reusable`` and the pool is open.

        The origin's oldest idle socket is closed if it has expired, so idle
        sockets never outlive their expiry by more than the gap between two calls.
        """
        closing: DirectConnection | None = conn
        with self._freed:
            self._in_use.discard(conn)
            self._give_slot(conn.key)
            if reusable and not self._closed:
                now = conn.idle_since = time.monotonic()
                idle = self._idle.setdefault(conn.key, [])
                expired = idle and now - idle[0].idle_since > self._limits.keepalive_expiry
                closing = idle.pop(0) if expired else None
                idle.append(conn)
        if closing is not None:
            closing.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the idle sockets and shut down those in use; nothing is sent after this."""
        with self._freed:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
            busy = list(self._in_use)
            self._freed.notify_all()
        for conn in idle:
            conn.close()
        for conn in busy:
            conn.shut()

    def _has_slot(self, key: Origin) -> bool:
        limits = self._limits
        if self._busy >= limits.max_connections:
            return False
        per_host = limits.max_connections_per_host
        return per_host is None or self._in_use_by.get(key, 0) < per_host

    def _take_slot(self, key: Origin) -> None:
        self._busy += 1
        self._in_use_by[key] = self._in_use_by.get(key, 0) + 1

    def _give_slot(self, key: Origin) -> None:
        self._busy -= 1
        left = self._in_use_by[key] - 1
        if left:
            self._in_use_by[key] = left
        else:
            del self._in_use_by[key]
        if self._limits.max_connections_per_host is None:
            self._freed.notify()  # any waiter can take the slot
        else:  # only a waiter for a host under its own limit can: each looks again
            self._freed.notify_all()

    # ------------------------------------------------------------ opening

    def _open(self, key: Origin, deadline: float) -> socket.socket:
        tls = key.scheme == "https"
        try:
            sock = _connect(key.host, key.port, deadline)
        except TimeoutError:
            raise
        except OSError as error:  # refused, unreachable, no such name
            raise ConnectFailed(str(error)) from error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls:
                sock.settimeout(_left(deadline))
                sock = self._context().wrap_socket(sock, server_hostname=key.name or key.host)
        except TimeoutError:
            sock.close()
            raise
        except (OSError, ssl.SSLError) as error:  # the handshake, or the certificate
            sock.close()
            raise ConnectFailed(str(error)) from error
        return sock


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    """A connected socket to ``host``, trying each address it has in turn, by ``deadline``."""
    if _is_address(host):
        return socket.create_connection((host, port), timeout=_left(deadline))
    addresses = _look_up(host, port, deadline)
    failure: OSError | None = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_left(deadline))
            sock.connect(address)
        except OSError as error:
            sock.close()
            if isinstance(error, TimeoutError):
                raise
            failure = error
            continue
        return sock
    raise failure or OSError(f"no address for {host}")


@lru_cache(maxsize=256)
def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _look_up(host: str, port: int, deadline: float) -> list[Any]:
    """``host``'s addresses, by ``deadline``: a TimeoutError if the resolver is slower.

    ``getaddrinfo`` cannot be interrupted, so it runs in a daemon thread of
    its own (a lookup is rare: a connection is opened once and kept). One
    that hangs holds only its own thread, never another lookup, and never
    the interpreter's exit.
    """
    found: list[Any] = []
    done = threading.Event()

    def look() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except OSError as error:
            found.append(error)
        finally:
            done.set()

    threading.Thread(target=look, name="microcall-lookup", daemon=True).start()
    if not done.wait(_left(deadline)):
        raise TimeoutError(f"looking up {host} took too long")
    if isinstance(found[0], OSError):
        raise found[0]
    return list(found[0])


def _arm(sock: socket.socket, option: int, deadline: float) -> None:
    """Bound the next blocking reads (``SO_RCVTIMEO``) or writes (``SO_SNDTIMEO``) by ``deadline``.

    A plain socket stays blocking and the kernel times its waits out (a
    read then fails with EAGAIN): one ``setsockopt`` an exchange, where
    Python's own timeouts cost a ``poll`` before every read and write and
    an ``ioctl`` for every change of timeout. A TLS socket keeps Python's
    timeouts: the ssl module retries a read the kernel timed out, for ever.
    """
    left = _left(deadline)
    seconds = int(left)
    micros = int((left - seconds) * 1_000_000)
    sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(seconds, micros or 1))


def _left(deadline: float) -> float:
    """Seconds until ``deadline``; a TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt's time ran out")
    return left
