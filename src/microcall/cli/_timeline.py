"""The timeline of one call: each attempt, where it went, how it ended, and the deadline it carried.

The engine records each attempt (:class:`~microcall.Attempt`: kind, endpoint,
start offset, duration, outcome); what it sent downstream is in the
attempt's outgoing headers, which only an observer sees. So
:class:`HeaderRecorder` is an observer (:mod:`microcall.observe.hooks`) that
keeps a copy of each attempt's headers, and :func:`timeline` joins the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from yarl import URL

from microcall._attempt import Attempt, AttemptKind
from microcall._redact import shown_headers
from microcall._request import Request
from microcall._response import Response
from microcall.cli._common import printable
from microcall.observe.hooks import AttemptScope

TIMEOUT_HEADER = "X-Request-Timeout"
PRIORITY_HEADER = "X-Request-Priority"


class _CallHeaders:
    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent: dict[int, dict[str, str]] = {}

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> AttemptScope | None:
        # As the terminal or a CI log may show them: no credential in clear.
        self.sent[index] = shown_headers(headers)
        return None

    def call_ended(
        self, response: Response | None, error: BaseException | None, attempts: Sequence[Attempt]
    ) -> None:
        pass


class HeaderRecorder:
    """An observer keeping the outgoing headers of each attempt of the latest call."""

    def __init__(self) -> None:
        self._last = _CallHeaders()

    def call_started(self, request: Request) -> _CallHeaders:
        self._last = _CallHeaders()
        return self._last

    def sent(self, index: int) -> dict[str, str]:
        """The headers attempt ``index`` of the latest call went out with (empty if unsent)."""
        return self._last.sent.get(index, {})


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One attempt as the timeline shows it; times in seconds from the call's start."""

    index: int
    kind: str
    endpoint: str
    outcome: str
    ok: bool
    started: float
    duration: float
    deadline_sent: float | None
    priority_sent: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def outcome_of(attempt: Attempt, code: str | None = None) -> tuple[str, bool]:
    """How an attempt ended, in a word or two, and whether that was a success."""
    if not attempt.sent:
        return f"not sent: {attempt.error}", False
    if attempt.cancelled:
        return "cancelled", False
    if code is not None:
        return code, code == "OK"
    if attempt.status is not None:
        return str(attempt.status), attempt.status < 500 and attempt.status not in (408, 429)
    return attempt.error or "no outcome", False


def timeline(
    attempts: Sequence[Attempt],
    sent: Mapping[int, Mapping[str, str]],
    *,
    codes: Mapping[int, str] | None = None,
    deadlines: Mapping[int, float] | None = None,
) -> list[Step]:
    """Join attempt records with what each sent (headers, or for gRPC its deadline)."""
    steps = []
    for attempt in attempts:
        headers = {name.lower(): value for name, value in sent.get(attempt.index, {}).items()}
        deadline: float | None
        if deadlines is not None and attempt.index in deadlines:
            deadline = deadlines[attempt.index]
        else:
            deadline = _float(headers.get(TIMEOUT_HEADER.lower()))
        outcome, ok = outcome_of(attempt, (codes or {}).get(attempt.index))
        steps.append(
            Step(
                index=attempt.index,
                kind=str(attempt.kind),
                endpoint=attempt.endpoint,
                outcome=outcome,
                ok=ok,
                started=attempt.started,
                duration=attempt.duration,
                deadline_sent=deadline,
                priority_sent=headers.get(PRIORITY_HEADER.lower()),
            )
        )
    return steps


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def render(steps: Sequence[Step], *, total: float, width: int = 24) -> Any:
    """The timeline as a rich table, with a bar showing when each attempt ran."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, title="attempts", title_justify="left")
    for header, justify in (
        ("#", "right"),
        ("kind", "left"),
        ("endpoint", "left"),
        ("outcome", "left"),
        ("start ms", "right"),
        ("took ms", "right"),
        ("deadline sent", "right"),
        ("", "left"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    span = max(total, max((s.started + s.duration for s in steps), default=0.0), 1e-9)
    for step in steps:
        begin = min(round(step.started / span * width), width - 1)
        length = max(1, round(step.duration / span * width))
        bar = Text(
            " " * begin + "━" * min(length, width - begin), style="green" if step.ok else "red"
        )
        table.add_row(
            str(step.index),
            step.kind,
            step.endpoint or "-",
            Text(printable(step.outcome), style="green" if step.ok else "red"),
            f"{step.started * 1000:.1f}",
            f"{step.duration * 1000:.1f}",
            "-" if step.deadline_sent is None else f"{step.deadline_sent:.3f} s",
            bar,
        )
    return table
