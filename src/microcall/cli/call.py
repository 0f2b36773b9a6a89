"""``microcall get|post|put|patch|delete|head URL [items...]``: one call, and what every attempt did.

The call goes through an :class:`~microcall.AsyncClient` like any other, so
the strategy, deadline, priority and balancing are the library's own. For
people it prints the status, headers and a coloured body, then the
timeline of attempts (:mod:`microcall.cli._timeline`); for programs
(``--json``, or stdout not a terminal) one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from microcall._attempt import Attempt
from microcall._redact import without_user_info
from microcall._response import Response
from microcall.cli import _common, _options
from microcall.cli._common import CliError, printable
from microcall.cli._items import RequestItems, parse_items
from microcall.cli._timeline import HeaderRecorder, Step, render, timeline
from microcall.client import AsyncClient, ClientOptions
from microcall.errors import CallError
from microcall.policy.strategy import Strategy

METHODS = ("get", "post", "put", "patch", "delete", "head")
BODYLESS = frozenset({"GET", "HEAD", "DELETE"})


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """One subcommand per HTTP method."""
    for method in METHODS:
        parser = commands.add_parser(
            method,
            help=f"one {method.upper()} call, with the timeline of its attempts",
            description=f"Send one {method.upper()} and show the answer and every attempt "
            "behind it (first, retries, hedges): endpoint, outcome, timing, deadline sent.",
            epilog="items: Header:value  key==value (query)  key=value (JSON string field)  "
            "key:=json (raw JSON field). Exit status: 0 for 1xx-3xx, 4 for 4xx, 5 for 5xx, "
            "6 for no answer, 2 for bad input.",
        )
        parser.add_argument("url", metavar="URL", help="http(s)://host[:port]/path; :8080/path")
        parser.add_argument("items", nargs="*", metavar="ITEM", help="request items")
        add_output_options(parser)
        parser.add_argument(
            "--raw", metavar="TEXT", help="send TEXT as the body instead of JSON fields"
        )
        _options.add_call_options(parser)
        parser.set_defaults(command=run, method=method.upper())


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json``, ``--pretty`` and ``--verbose``."""
    group = parser.add_argument_group("output")
    group.add_argument(
        "--json", action="store_true", help="one JSON document (the default when piped)"
    )
    group.add_argument(
        "--pretty", action="store_true", help="output for people even when stdout is not a terminal"
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", help="also show the request as it was sent"
    )


def run(arguments: argparse.Namespace) -> int:
    """Make the call and print it."""
    url = _options.parse_url(arguments.url)
    items = parse_items(arguments.items)
    strategy = _options.parse_strategy(arguments.strategy)
    target = _options.Target.of(url, arguments.replica)
    if arguments.raw is not None and items.json is not None:
        raise CliError("give --raw or JSON fields (key=value, key:=json), not both")
    recorder = HeaderRecorder()
    outcome = asyncio.run(_call(arguments, target, items, strategy, recorder))
    as_json = _common.wants_json(arguments.json, arguments.pretty)
    if isinstance(outcome, Response):
        steps = timeline(outcome.attempts, _sent(recorder, outcome.attempts))
        if as_json:
            _print_json(_response_json(arguments.method, outcome, steps, recorder))
        else:
            _print_human(arguments, outcome, steps, recorder)
        return _common.http_exit_status(outcome.status_code)
    steps = timeline(outcome.attempts, _sent(recorder, outcome.attempts))
    if as_json:
        _print_json(_error_json(arguments.method, str(url), outcome, steps))
    elif steps:
        _console().print(render(steps, total=_span(steps)))
    raise CliError(
        f"no answer: {type(outcome).__name__}: {outcome.message}", _common.EXIT_NO_ANSWER
    )


async def _call(
    arguments: argparse.Namespace,
    target: _options.Target,
    items: RequestItems,
    strategy: Strategy,
    recorder: HeaderRecorder,
) -> Response | CallError:
    options: ClientOptions = {
        "timeout": arguments.deadline,
        "strategy": strategy,
        "observers": [recorder],
    }
    if arguments.priority is not None:
        options["priority"] = arguments.priority
    call: dict[str, Any] = {"headers": items.headers, "params": items.params}
    if items.json is not None:
        call["json"] = items.json
    elif arguments.raw is not None:
        call["content"] = arguments.raw.encode()
    if arguments.idempotent:
        call["idempotent"] = True
    async with AsyncClient(list(target.bases), **options) as client:
        try:
            return await client.request(arguments.method, target.path, **call)
        except CallError as error:
            return error


def _sent(recorder: HeaderRecorder, attempts: Sequence[Attempt]) -> dict[int, dict[str, str]]:
    return {attempt.index: recorder.sent(attempt.index) for attempt in attempts}


def _span(steps: Sequence[Step]) -> float:
    return max((step.started + step.duration for step in steps), default=0.0)


def _body(response: Response) -> Any:
    """The body as JSON when it parses, else as text."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return response.content.decode("utf-8", errors="replace")


def _response_json(
    method: str, response: Response, steps: Sequence[Step], recorder: HeaderRecorder
) -> dict[str, Any]:
    final = steps[-1].index if steps else 0
    return {
        "request": {
            "method": method,
            "url": str(response.request.url),
            "headers": recorder.sent(final),
        },
        "status": response.status_code,
        "reason": response.reason,
        "headers": dict(response.headers),
        "body": _body(response),
        "elapsed": response.elapsed,
        "attempts": [step.to_json() for step in steps],
        "error": None,
    }


def _error_json(method: str, url: str, error: CallError, steps: Sequence[Step]) -> dict[str, Any]:
    return {
        "request": {"method": method, "url": without_user_info(url)},
        "status": None,
        "error": {"type": type(error).__name__, "message": error.message},
        "attempts": [step.to_json() for step in steps],
    }


def _print_json(document: dict[str, Any], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    stream.write(json.dumps(document, indent=2, default=str) + "\n")
    stream.flush()


def _console() -> Any:
    return _common.console()


def _print_human(
    arguments: argparse.Namespace,
    response: Response,
    steps: Sequence[Step],
    recorder: HeaderRecorder,
) -> None:
    from rich.json import JSON
    from rich.text import Text

    console = _console()
    if arguments.verbose:
        final = steps[-1].index if steps else 0
        console.print(Text(f"{arguments.method} {response.request.url}", style="bold"))
        for name, value in recorder.sent(final).items():
            console.print(Text.assemble((name, "cyan"), ": ", value))
        console.print()
    style = "green" if response.status_code < 400 else "red"
    # What the server sent is shown, never obeyed: no escape sequence of its
    # own reaches the terminal.
    reason = printable(response.reason)
    console.print(Text(f"HTTP {response.status_code} {reason}", style=f"bold {style}"))
    for name, value in response.headers.items():
        console.print(Text.assemble((printable(name), "cyan"), ": ", printable(value)))
    body = _body(response)
    if body is not None:
        console.print()
        if isinstance(body, str):
            console.print(Text(printable(body)))
        else:
            console.print(JSON.from_data(body))
    console.print()
    console.print(render(steps, total=response.elapsed))
    attempts = sum(1 for step in steps if step.outcome != "not sent")
    console.print(
        f"{attempts} attempt{'s' if attempts != 1 else ''}, {response.elapsed * 1000:.1f} ms in all"
    )
