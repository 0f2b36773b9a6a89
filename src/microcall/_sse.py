"""Server-sent events: the ``text/event-stream`` format read as the WHATWG EventSource reads it.

Theory of operation. The HTML standard's "event stream interpretation"
(section 9.2.6) is a small state machine over lines, and this is it, minus
the reconnection (a client that wants to reconnect makes a new call with
``Last-Event-ID``):

- the stream is UTF-8 (whatever Content-Type says); one leading BOM is dropped;
- lines end at CRLF, LF or CR (``microcall._lines``);
- a line starting with ``:`` is a comment; otherwise ``field: value`` (one
  space after the colon is dropped; a line without a colon is a field with
  an empty value);
- ``event`` sets the next event's type, ``data`` adds a line to its data,
  ``id`` sets the last event ID (unless it contains NUL; it persists across
  events), ``retry`` sets the reconnection time when it is all ASCII digits;
  any other field is ignored;
- a blank line dispatches the event: none when no data was given (the type
  is reset either way); the data's last line break is dropped;
- an event the stream ends in the middle of (no blank line after it) is
  never dispatched.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any

from microcall._lines import LineSplitter, LineTooLong

_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event of a ``text/event-stream`` body (``response.aiter_sse()`` / ``iter_sse()``).

    ``event`` is its type (``"message"`` unless the server named one),
    ``data`` its data lines joined with ``"\\n"``, ``id`` the stream's last
    event ID when it was dispatched (the ``id`` field persists from event to
    event, as in EventSource), and ``retry`` the reconnection time in
    milliseconds the stream last asked for (None: it never did).

    >>> ServerSentEvent(data='{"n": 1}').json()
    {'n': 1}
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None

    def json(self, **kwargs: Any) -> Any:
        """The data parsed as JSON (``json.loads`` keyword arguments pass through)."""
        return _json.loads(self.data, **kwargs)


class EventDecoder:
    """Body pieces in, dispatched events out (see the module's theory)."""

    __slots__ = ("_data", "_event", "_held", "_last_id", "_limit", "_lines", "_retry", "_started")

    def __init__(self, limit: int | None = None) -> None:
        # ``limit``: the characters one event may gather (its data lines, and
        # a line not yet ended); past it, LineTooLong rather than a growing buffer.
        self._lines = LineSplitter("utf-8", limit)
        self._limit = limit
        self._started = False  # the first line is checked for a BOM
        self._event = ""
        self._data: list[str] = []
        self._held = 0  # characters in _data
        self._last_id = ""
        self._retry: int | None = None

    def feed(self, piece: bytes) -> list[ServerSentEvent]:
        """The events that ``piece`` completes."""
        return self._decode(self._lines.feed(piece))

    def flush(self) -> list[ServerSentEvent]:
        """At the end of the body: the event its last line break completed, if any.

        An event without its blank line is dropped, as the standard says: a
        last line without a break is read as a field, and nothing dispatches it.
        """
        return self._decode(self._lines.flush())

    def _decode(self, lines: list[str]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        for line in lines:
            if not self._started:
                self._started = True
                line = line.removeprefix(_BOM)
            if not line:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
            elif line[0] != ":":
                name, colon, value = line.partition(":")
                if colon and value.startswith(" "):
                    value = value[1:]
                self._field(name, value)
        return events

    def _field(self, name: str, value: str) -> None:
        if name == "data":
            self._data.append(value)
            self._held += len(value) + 1
            if self._limit is not None and self._held > self._limit:
                raise LineTooLong(self._limit)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data = []
        self._held = 0
        self._event = ""
        if not data:
            return None
        return ServerSentEvent(
            event=event or "message", data="\n".join(data), id=self._last_id, retry=self._retry
        )
