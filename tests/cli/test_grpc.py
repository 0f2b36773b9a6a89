"""``microcall grpc``: a grpc.aio server with reflection (the Recommendations example) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import grpc.aio
import pytest
from examples.recommendations.server import RunningServer, start
from grpc_health.v1 import health, health_pb2_grpc

from tests.cli.conftest import LoopThread, Run, one_line_error

METHOD = "bookstore.Recommendations/Recommend"


@pytest.fixture(scope="module")
def recommendations(server_thread: LoopThread) -> Iterator[str]:
    running: RunningServer = server_thread.run(start("127.0.0.1:0"))
    yield f"127.0.0.1:{running.port}"
    server_thread.run(running.stop(None))


@pytest.fixture(scope="module")
def no_reflection(server_thread: LoopThread) -> Iterator[str]:
    async def go() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = server_thread.run(go())
    yield f"127.0.0.1:{port}"
    server_thread.run(server.stop(None))


def test_call_returns_the_reply_as_json(run: Run, recommendations: str) -> None:
    request = '{"user_id": 1, "category": "MYSTERY", "max_results": 2}'
    ran = run("grpc", recommendations, METHOD, request, "--json", "--priority", "low")
    assert ran.status == 0
    document = ran.json()
    assert document["code"] == "OK"
    assert len(document["response"]["recommendations"]) == 2
    (attempt,) = document["attempts"]
    assert attempt["kind"] == "first"
    assert attempt["outcome"] == "OK"
    assert attempt["endpoint"] == recommendations
    assert 0 < attempt["deadline_sent"] <= 10.0


def test_hedges_show_in_the_timeline(run: Run, recommendations: str) -> None:
    ran = run(
        "grpc",
        recommendations,
        "bookstore.Recommendations.Recommend",
        '{"category": "SELF_HELP", "max_results": 1}',
        "--strategy",
        "hedged:0.0001",
        "--idempotent",
        "--pretty",
    )
    assert ran.status == 0
    assert "bookstore.Recommendations/Recommend OK" in ran.out
    assert '"title"' in ran.out
    assert "first" in ran.out
    assert "deadline sent" in ran.out


def test_a_status_that_blames_the_request_exits_4(run: Run, recommendations: str) -> None:
    # An enum number the server does not know: it answers NOT_FOUND.
    ran = run("grpc", recommendations, METHOD, '{"category": 7}', "--json")
    assert ran.status == 4
    assert ran.json()["code"] == "NOT_FOUND"
    assert one_line_error(ran)


@pytest.mark.parametrize(
    ("method", "data", "says"),
    [
        ("bookstore.Nowhere/Recommend", "{}", "offers no service"),
        ("bookstore.Recommendations/Nothing", "{}", "has no method"),
        ("bookstore.Recommendations/RecommendStream", "{}", "only unary"),
        (METHOD, '{"category": "POETRY"}', "bad request"),
        (METHOD, "{not json", "bad JSON"),
        ("Recommend", "{}", "bad method"),
    ],
)
def test_bad_calls(run: Run, recommendations: str, method: str, data: str, says: str) -> None:
    ran = run("grpc", recommendations, method, data)
    assert ran.status == 2
    assert one_line_error(ran), ran.err
    assert says in ran.err


@pytest.mark.parametrize("target", ["127.0.0.1:notaport", "127.0.0.1:70000", "127.0.0.1", "a/b:1"])
def test_a_bad_target_is_bad_input(run: Run, target: str) -> None:
    ran = run("grpc", target, METHOD, "{}")
    assert ran.status == 2
    assert one_line_error(ran)
    assert "expected host:port" in ran.err


def test_a_server_without_reflection(run: Run, no_reflection: str) -> None:
    ran = run("grpc", no_reflection, METHOD, "{}")
    assert ran.status == 2
    assert one_line_error(ran)
    assert "does not offer gRPC reflection" in ran.err


def test_unreachable_server(run: Run, unused_port: int) -> None:
    ran = run("grpc", f"127.0.0.1:{unused_port}", METHOD, "{}", "--deadline", "0.5")
    assert ran.status == 6
    assert one_line_error(ran)
