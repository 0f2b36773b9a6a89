"""``microcall get|post|...``: against a real aiohttp service on 127.0.0.1, outputs and exit statuses."""

from __future__ import annotations

import socket
import threading

import pytest

import microcall
from microcall.cli._common import one_line, printable
from tests.cli.conftest import Run, one_line_error


def test_get_prints_one_json_document_with_the_timeline(run: Run, service: str) -> None:
    ran = run("get", f"{service}/echo", "q==dune", "X-Api-Key:abc", "--priority", "high")
    assert ran.status == 0
    document = ran.json()
    assert document["status"] == 200
    assert document["body"]["query"] == [["q", "dune"]]
    assert document["body"]["headers"]["x-api-key"] == "abc"
    assert document["body"]["headers"]["x-request-priority"] == "high"
    (attempt,) = document["attempts"]
    assert attempt["kind"] == "first"
    assert attempt["outcome"] == "200"
    assert attempt["endpoint"] == service.removeprefix("http://")
    # The deadline sent is what was left of the 10 s default, rounded down.
    assert 0 < attempt["deadline_sent"] <= 10.0
    assert float(document["body"]["headers"]["x-request-timeout"]) == attempt["deadline_sent"]
    assert attempt["priority_sent"] == "high"
    assert document["request"]["headers"]["X-Request-Timeout"]


def test_credentials_given_on_the_command_line_are_never_printed(
    run: Run, service: str, unused_port: int
) -> None:
    """The output lands in terminals' scrollback and CI logs: what was sent, not the secret."""
    sent = run("get", f"{service}/status/200", "Authorization:Bearer s3cret", "X-Api-Key:s3cret")
    assert sent.status == 0
    assert sent.json()["request"]["headers"]["Authorization"] == "Bearer <hidden>"
    assert sent.json()["request"]["headers"]["X-Api-Key"] == "<hidden>"
    verbose = run("get", f"{service}/status/200", "Authorization:Bearer s3cret", "--verbose")
    refused = run("get", f"http://svc:s3cret@127.0.0.1:{unused_port}/x")
    assert refused.status == 6
    assert refused.json()["request"]["url"] == f"http://127.0.0.1:{unused_port}/x"
    for ran in (sent, verbose, refused):
        assert "s3cret" not in ran.out + ran.err


def test_pretty_output_shows_status_headers_body_and_attempts(run: Run, service: str) -> None:
    ran = run("get", f"{service}/echo", "--pretty", "--deadline", "2", "--verbose")
    assert ran.status == 0
    assert ran.out.startswith(f"GET {service}/echo")
    assert "HTTP 200 OK" in ran.out
    assert "Content-Type: application/json" in ran.out
    assert '"method": "GET"' in ran.out
    for column in ("kind", "endpoint", "outcome", "start ms", "took ms", "deadline sent"):
        assert column in ran.out
    assert "1 attempt," in ran.out
    assert "\x1b[" not in ran.out  # no colour codes into a pipe


def test_post_sends_json_fields(run: Run, service: str) -> None:
    ran = run("post", f"{service}/echo", "title=Dune", "year:=1965", 'tags:=["sf"]')
    assert ran.status == 0
    assert ran.json()["body"]["json"] == {"title": "Dune", "year": 1965, "tags": ["sf"]}
    assert ran.json()["body"]["method"] == "POST"


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods(run: Run, service: str, method: str) -> None:
    ran = run(method, f"{service}/echo", "--raw", "hello")
    assert ran.status == 0
    assert ran.json()["body"]["method"] == method.upper()
    assert ran.json()["body"]["text"] == "hello"


def test_head_has_no_body(run: Run, service: str) -> None:
    ran = run("head", f"{service}/echo")
    assert ran.status == 0
    assert ran.json()["body"] is None


def test_retry_shows_each_attempt(run: Run, service: str) -> None:
    ran = run("get", f"{service}/flaky/retry-1", "--strategy", "retry:3")
    assert ran.status == 0
    kinds = [(a["kind"], a["outcome"]) for a in ran.json()["attempts"]]
    assert kinds == [("first", "503"), ("retry", "200")]
    first, second = ran.json()["attempts"]
    assert second["started"] >= first["started"] + first["duration"]
    # The retry carried what was left of the deadline, less than the first attempt did.
    assert second["deadline_sent"] < first["deadline_sent"]


def test_hedge_goes_to_the_replica_and_wins(run: Run, service: str, replica: str) -> None:
    ran = run(
        "get", f"{service}/slow-first/hedge-1", "--strategy", "hedged:0.05", "--replica", replica
    )
    assert ran.status == 0
    attempts = ran.json()["attempts"]
    assert [a["kind"] for a in attempts] == ["first", "hedge"]
    assert attempts[1]["started"] >= 0.05
    endpoints = {a["endpoint"] for a in attempts}
    assert endpoints <= {service.removeprefix("http://"), replica.removeprefix("http://")}
    # The first attempt was slow (300 ms); the hedge answered and the first was stopped.
    assert attempts[0]["outcome"] == "cancelled"
    assert attempts[1]["outcome"] == "200"


@pytest.mark.parametrize(("code", "status"), [(200, 0), (302, 0), (404, 4), (429, 4), (503, 5)])
def test_exit_status_follows_the_answer(run: Run, service: str, code: int, status: int) -> None:
    # A 302 with no Location stays a 302 answer.
    ran = run("get", f"{service}/status/{code}")
    assert ran.status == status
    assert ran.json()["status"] == code


def test_unreachable_target_is_one_line_and_status_6(run: Run, unused_port: int) -> None:
    ran = run("get", f"http://127.0.0.1:{unused_port}/", "--pretty")
    assert ran.status == 6
    assert one_line_error(ran)
    assert "ConnectError" in ran.err
    assert "attempts" in ran.out  # the timeline still shows what was tried


def test_deadline_exceeded_is_no_answer(run: Run, service: str) -> None:
    ran = run("get", f"{service}/sleep/2", "--deadline", "0.1")
    assert ran.status == 6
    assert one_line_error(ran)
    assert "DeadlineExceeded" in ran.err
    assert ran.json()["error"]["type"] == "DeadlineExceeded"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["get", "http://"], "bad URL"),
        (["get", "ftp://example.com/x"], "bad URL"),
        (["get", "http://127.0.0.1:99999/"], "bad URL"),
        (["get", "http://127.0.0.1:1/", "--strategy", "sometimes"], "unknown strategy"),
        (["get", "http://127.0.0.1:1/", "--strategy", "retry:x"], "bad strategy"),
        (["get", "http://127.0.0.1:1/", "=oops"], "bad request item"),
        (["get", "http://127.0.0.1:1/", "n:=nope"], "bad JSON"),
        (["get", "http://127.0.0.1:1/", "Bad Header:x"], "bad header name"),
        (["get", "http://127.0.0.1:1/", "--deadline", "0"], "--deadline"),
        (["get", "http://127.0.0.1:1/", "--priority", "urgent"], "unknown priority"),
        (["post", "http://127.0.0.1:1/", "a=1", "--raw", "x"], "not both"),
        (["get", "http://127.0.0.1:1/", "--replica", "http://h:1/path"], "bad replica"),
        (["fetch", "http://127.0.0.1:1/"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_status_2(run: Run, argv: list[str], says: str) -> None:
    ran = run(*argv)
    assert ran.status == 2
    assert one_line_error(ran), ran.err
    assert says in ran.err


def test_version(run: Run) -> None:
    ran = run("--version")
    assert ran.status == 0
    assert ran.out.strip() == f"microcall {microcall.__version__}"


def test_no_command_prints_help(run: Run) -> None:
    ran = run()
    assert ran.status == 2
    assert "get" in ran.out
    assert "load" in ran.out
    assert "grpc" in ran.out


def test_a_missing_optional_package_is_named(
    run: Run, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    for name in ["rich", *(name for name in sys.modules if name.startswith("rich."))]:
        monkeypatch.setitem(sys.modules, name, None)
    ran = run("get", f"{service}/echo", "--pretty")
    assert ran.status == 2
    assert one_line_error(ran)
    assert "pip install 'microcall[cli]'" in ran.err
    # JSON output needs no rich.
    assert run("get", f"{service}/echo", "--json").status == 0


def _answer_once(answer: bytes) -> tuple[int, threading.Thread, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    return listener.getsockname()[1], server, listener


HOSTILE = b"\x1b]0;owned\x07\x1b[2J"


@pytest.mark.parametrize(
    "answer",
    [
        # In the body: a valid answer, shown escaped.
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n" + HOSTILE,
        # In the reason phrase and a header: not HTTP, refused; its error shown escaped.
        b"HTTP/1.1 200 OK"
        + HOSTILE
        + b"\r\nX-Evil: a"
        + HOSTILE
        + b"\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["body", "head"],
)
def test_what_a_server_sends_cannot_drive_the_terminal(run: Run, answer: bytes) -> None:
    """Escape sequences that would retitle or clear the terminal are shown, never obeyed."""
    port, server, listener = _answer_once(answer)
    with listener:
        ran = run("get", f"http://127.0.0.1:{port}/", "--pretty")
        server.join(5)
    assert ran.status in (0, 6)
    assert "\x1b" not in ran.out + ran.err
    if ran.status == 0:
        assert "\\x1b]0;owned" in ran.out


def test_a_multi_line_status_message_is_one_line_on_stderr() -> None:
    assert one_line("deadline\nexceeded\x1b[2J") == "deadline exceeded\\x1b[2J"
    assert printable("tab\tand\nnewline kept, \x00 shown") == "tab\tand\nnewline kept, \\x00 shown"
