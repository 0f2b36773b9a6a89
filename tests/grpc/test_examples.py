"""The Recommendations example: its server, health service and client; the generated code is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from examples.recommendations import client, server
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from microcall.errors import GrpcStatusError
from microcall.examples_pb import recommendations_pb2
from microcall.examples_pb.recommendations_pb2 import MYSTERY, RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
from microcall.grpc import AsyncChannel

ROOT = Path(__file__).resolve().parents[2]


async def test_the_example_server_answers_and_reports_its_health() -> None:
    running = await server.start()
    try:
        async with AsyncChannel(f"127.0.0.1:{running.port}") as channel:
            status = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=server.SERVICE_NAME)
            )
            stub = RecommendationsStub(channel)
            reply = await stub.Recommend(RecommendationRequest(category=MYSTERY, max_results=2))
            streamed = [
                book.title
                async for book in stub.RecommendStream(
                    RecommendationRequest(category=MYSTERY, max_results=5)
                )
            ]
            with pytest.raises(GrpcStatusError) as raised:
                await stub.Recommend(RecommendationRequest(category=42, max_results=1))
    finally:
        await running.stop(grace=None)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert len(reply.recommendations) == 2
    mysteries = {book.title for book in server.BOOKS[MYSTERY]}
    assert {book.title for book in reply.recommendations} <= mysteries
    assert sorted(streamed) == sorted(mysteries)
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert running.interceptor.stats.admitted == 3  # health checks pass by the gate


async def test_the_example_client(capsys: pytest.CaptureFixture[str]) -> None:
    running = await server.start()
    try:
        await client.run([f"127.0.0.1:{running.port}"], user_id=3)
    finally:
        await running.stop(grace=None)
    out = capsys.readouterr().out
    assert "health: SERVING" in out
    assert out.count("recommended: ") == 3
    assert out.count("streamed: ") == 3


def test_the_generated_code_matches_the_proto(tmp_path: Path) -> None:
    compiled = tmp_path / "recommendations.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-Imicrocall/examples_pb={ROOT / 'protos'}",
            f"--descriptor_set_out={compiled}",
            str(ROOT / "protos" / "recommendations.proto"),
        ],
        check=True,
        cwd=ROOT,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(compiled.read_bytes()).file[0]
    for message in fresh.message_type:  # protoc adds these to a descriptor set only
        for one in message.field:
            one.ClearField("json_name")
    committed = descriptor_pb2.FileDescriptorProto()
    recommendations_pb2.DESCRIPTOR.CopyToProto(committed)
    # Comments are not part of a descriptor; everything else must be equal.
    assert fresh == committed, "protos/ changed: run `make protos` and commit the result"
