"""What every subcommand shares: its one error type, the exit statuses, and output choice.

Exit statuses (the same idea as httpie's ``--check-status``, so a shell
script can tell a refusal from an outage)::

    0    the call was answered with 1xx, 2xx or 3xx (gRPC: OK); a load run finished
    1    an unexpected failure (a bug: please report it)
    2    bad input: an unknown option, a bad URL, item or strategy, a rate of 0
    4    the answer was a 4xx (gRPC: a status that blames the request)
    5    the answer was a 5xx (gRPC: any other non-OK status)
    6    no answer: unreachable, connection failed, deadline exceeded, circuit open
    130  interrupted (Ctrl-C)
    141  stdout was closed early (``microcall get URL | head``): quietly, no traceback
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_CLIENT_ERROR = 4
EXIT_SERVER_ERROR = 5
EXIT_NO_ANSWER = 6
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it


class CliError(Exception):
    """A failure the command reports as one line on stderr, with ``status`` as exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def http_exit_status(status_code: int) -> int:
    """The exit status for an HTTP answer."""
    if status_code >= 500:
        return EXIT_SERVER_ERROR
    if status_code >= 400:
        return EXIT_CLIENT_ERROR
    return EXIT_OK


def wants_json(forced_json: bool, forced_human: bool, out: TextIO | None = None) -> bool:
    """JSON when asked, or when stdout is not a terminal and people output was not asked for."""
    if forced_json:
        return True
    if forced_human:
        return False
    stream = out if out is not None else sys.stdout
    return not _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def console(file: TextIO | None = None) -> Any:
    """A rich Console on ``file`` (stdout) that lets a broken pipe reach :func:`main`.

    rich's own answer to a closed pipe is ``SystemExit(1)``; the command's is a
    quiet exit with its own status. Not a terminal (``--pretty`` into a pipe):
    no colour codes, and lines as wide as the content needs up to 120 columns.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    stream = file if file is not None else sys.stdout
    return _Console(file=stream, highlight=False, width=None if _isatty(stream) else 120)


# Control characters but newline and tab: what a hostile server could send to
# drive the terminal (ESC sequences retitle it, clear it, rewrite what it shows).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` as a terminal may be given it: control characters shown as escapes."""
    return _CONTROLS.sub(lambda found: repr(found.group())[1:-1], text)


def one_line(text: str) -> str:
    """``text`` as one printable line (a status message may hold newlines)."""
    return printable(" ".join(text.splitlines()))
