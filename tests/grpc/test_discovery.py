"""AsyncChannel over the addresses of one name, looked up again as replicas come and go.

Real grpc.aio servers on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all of 127/8 is
loopback on Linux) on one port, behind one name that a hosts table the test
edits resolves (``TargetDiscovery``'s ``resolver``). Lookups repeat every
50 ms, and each test waits for what it expects with a generous bound.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
import trustme

import microcall
from microcall.demo.bookstore._calls import channel_targets, resolve_targets
from microcall.examples_pb.recommendations_pb2 import RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import (
    RecommendationsStub,
    add_RecommendationsServicer_to_server,
)
from microcall.grpc import AsyncChannel, Channel, ChannelOptions, TargetDiscovery, Targets
from microcall.grpc._discovery import TargetRefresher, address_target, authority_options
from microcall.observe import LogLimiter, logs
from microcall.policy.balancer import BalancerConfig
from microcall.policy.breaker import CircuitBreakerConfig
from tests.grpc.conftest import Backend, Step
from tests.server._waiting import eventually

REQUEST = RecommendationRequest(user_id=1, max_results=3)
NAME = "recommendations.test"
EVERY = 0.05


class Hosts:
    """A hosts file the test edits: name -> addresses; ``failing`` makes lookups fail."""

    def __init__(self) -> None:
        self.table: dict[str, list[str]] = {}
        self.lookups = 0
        self.failing = False

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        self.lookups += 1
        if self.failing:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


class Replicas:
    """grpc.aio servers on one port, one per loopback address."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.servers: dict[str, grpc.aio.Server] = {}
        self.backends: dict[str, Backend] = {}

    async def start(self, address: str) -> Backend:
        backend = Backend()
        server = grpc.aio.server()
        add_RecommendationsServicer_to_server(backend, server)
        server.add_insecure_port(f"{address}:{self.port}")
        await server.start()
        self.servers[address] = server
        self.backends[address] = backend
        return backend

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop(None)


def _free_port(addresses: Sequence[str]) -> int:
    """A port nothing listens on at any of ``addresses``."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port: int = probe.getsockname()[1]
            others = []
            try:
                for address in addresses[1:]:
                    other = socket.socket()
                    others.append(other)
                    other.bind((address, port))
            except OSError:
                continue
            finally:
                for other in others:
                    other.close()
        return port
    raise RuntimeError("no port free on every test address")


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    group = Replicas(_free_port(["127.0.0.1", "127.0.0.2", "127.0.0.3"]))
    yield group
    await group.stop()


def _channel(hosts: Hosts, port: int, **options: Any) -> AsyncChannel:
    discovery = TargetDiscovery(target=f"{NAME}:{port}", every=EVERY, resolver=hosts.resolve)
    chosen = ChannelOptions(
        insecure=True, balancer=BalancerConfig(mode="round_robin"), timeout=5.0, **options
    )
    return AsyncChannel(discovery, chosen)


def _targets(channel: AsyncChannel) -> set[str]:
    return {endpoint.address for endpoint in channel.targets.endpoints}


async def _calls(stub: RecommendationsStub, count: int) -> None:
    for _ in range(count):
        await stub.Recommend(REQUEST)


async def test_calls_spread_over_every_address_of_the_name(replicas: Replicas) -> None:
    first = await replicas.start("127.0.0.1")
    second = await replicas.start("127.0.0.2")
    hosts = Hosts()
    hosts.table[NAME] = ["127.0.0.1", "127.0.0.2"]
    async with _channel(hosts, replicas.port) as channel:
        stub = RecommendationsStub(channel)
        await _calls(stub, 20)  # the first waits for the first lookup
        assert _targets(channel) == {f"127.0.0.1:{replicas.port}", f"127.0.0.2:{replicas.port}"}
    assert len(first.calls) == 10
    assert len(second.calls) == 10


async def test_a_replica_that_appears_gets_calls_and_one_that_leaves_gets_none(
    replicas: Replicas,
) -> None:
    await replicas.start("127.0.0.1")
    second = await replicas.start("127.0.0.2")
    third = await replicas.start("127.0.0.3")
    hosts = Hosts()
    hosts.table[NAME] = ["127.0.0.1", "127.0.0.2"]
    port = replicas.port
    async with _channel(hosts, port) as channel:
        stub = RecommendationsStub(channel)
        await _calls(stub, 4)
        assert not third.calls

        hosts.table[NAME] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        await eventually(lambda: f"127.0.0.3:{port}" in _targets(channel))
        await _calls(stub, 9)
        assert len(third.calls) == 3

        hosts.table[NAME] = ["127.0.0.1", "127.0.0.3"]
        await eventually(lambda: f"127.0.0.2:{port}" not in _targets(channel))
        before = len(second.calls)
        await _calls(stub, 10)
        assert len(second.calls) == before
        # Nothing was in flight on it: its channel is closed at once.
        assert len(channel.targets.channels) == 2


async def test_a_failed_lookup_keeps_the_targets_and_logs(
    replicas: Replicas, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A limiter of its own: lines other tests wrote just before must not hold this one back.
    monkeypatch.setattr(logs, "DEFAULT_LIMITER", LogLimiter())
    first = await replicas.start("127.0.0.1")
    second = await replicas.start("127.0.0.2")
    hosts = Hosts()
    hosts.table[NAME] = ["127.0.0.1", "127.0.0.2"]
    async with _channel(hosts, replicas.port) as channel:
        stub = RecommendationsStub(channel)
        await _calls(stub, 2)
        known = _targets(channel)
        caplog.set_level(logging.WARNING, logger="microcall")
        hosts.failing = True
        failed_from = hosts.lookups
        await eventually(lambda: hosts.lookups >= failed_from + 3)
        assert _targets(channel) == known
        await _calls(stub, 10)
    assert len(first.calls) == len(second.calls) == 6
    failures = [
        r for r in caplog.records if getattr(r, "microcall_event", "") == "discovery_failed"
    ]
    (failure,) = failures  # one line for the outage, not one per lookup
    assert NAME in failure.getMessage()


async def test_until_the_name_resolves_the_channel_calls_the_name_itself(
    replicas: Replicas,
) -> None:
    # "localhost": grpc's own resolver answers it without leaving the machine.
    hosts = Hosts()  # this resolver does not know the name yet
    discovery = TargetDiscovery(
        target=f"localhost:{replicas.port}", every=EVERY, resolver=hosts.resolve
    )
    async with AsyncChannel(discovery, ChannelOptions(insecure=True)) as channel:
        stub = RecommendationsStub(channel)
        with pytest.raises(microcall.CallError):  # nothing listens yet
            await stub.Recommend(REQUEST, timeout=2.0)
        assert _targets(channel) == {f"localhost:{replicas.port}"}
        backend = await replicas.start("127.0.0.1")
        hosts.table["localhost"] = ["127.0.0.1"]
        await eventually(lambda: _targets(channel) == {f"127.0.0.1:{replicas.port}"})
        await _calls(stub, 3)
    assert len(backend.calls) == 3


async def test_breakers_and_latency_records_survive_an_update() -> None:
    closed: list[str] = []

    class FakeChannel:
        def __init__(self, target: str) -> None:
            self.target = target

        def unary_unary(self, *args: Any, **kwargs: Any) -> str:
            return f"callable of {self.target}"

        async def close(self, grace: float | None = None) -> None:
            closed.append(self.target)

    targets: Targets[Any] = Targets(
        ["a:1", "b:1"],
        FakeChannel,
        balancer=BalancerConfig(),
        breaker=CircuitBreakerConfig(),
        ejection=None,
        changing=True,
    )
    table = targets.callables(lambda channel: channel.unary_unary("/m"))
    a, b = targets.endpoints
    targets.started(b, 0.0)  # an attempt on b is in flight
    assert targets.update(["a:1", "c:1"], 1.0) == []
    kept = {endpoint.address: endpoint for endpoint in targets.endpoints}
    assert kept["a:1"] is a  # same breaker, same latency record
    assert targets.slot_of(kept["c:1"]) == 2
    assert table[2] == "callable of c:1"
    # b left but its attempt still runs: its channel stays open until it ends.
    assert table[1] == "callable of b:1"
    targets.finished(b, 0.01, True, 2.0)
    (idle,) = targets.idle()
    assert idle.target == "b:1"
    assert table[1] is None
    # An address that comes back gets a channel again.
    targets.update(["a:1", "b:1", "c:1"], 3.0)
    assert table[targets.slot_of(targets.endpoints[1])] == "callable of b:1"


def test_each_event_loop_runs_its_own_lookups() -> None:
    hosts = Hosts()
    hosts.table[NAME] = ["127.0.0.9"]

    class FakeChannel:
        def __init__(self, target: str) -> None:
            self.target = target

        async def close(self, grace: float | None = None) -> None:
            pass

    targets: Targets[Any] = Targets(
        [f"{NAME}:1"],
        FakeChannel,
        balancer=BalancerConfig(),
        breaker=None,
        ejection=None,
        changing=True,
    )
    discovery = TargetDiscovery(target=f"{NAME}:1", every=EVERY, resolver=hosts.resolve)
    refresher = TargetRefresher(discovery, targets, lambda: 0.0)

    async def use() -> None:
        await refresher.ready()
        await refresher.ready()  # already resolved on this loop: no second lookup

    asyncio.run(use())
    assert hosts.lookups == 1
    hosts.table[NAME] = ["127.0.0.8"]
    asyncio.run(use())  # a second loop: the first loop's task ended with it
    assert hosts.lookups == 2
    assert [endpoint.address for endpoint in targets.endpoints] == ["127.0.0.8:1"]


def test_the_blocking_channel_refuses_discovery() -> None:
    discovery = TargetDiscovery(target=f"{NAME}:50051")
    with pytest.raises(microcall.ConfigurationError, match="AsyncChannel"):
        Channel(discovery)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target", ["recommendations", "dns:///recommendations:50051", "x:0", "x:port", ":50051", "::1"]
)
def test_discovery_needs_a_name_and_port(target: str) -> None:
    with pytest.raises(microcall.ConfigurationError, match="discovery needs a target"):
        TargetDiscovery(target=target)


def test_discovery_needs_a_positive_interval() -> None:
    with pytest.raises(microcall.ConfigurationError):
        TargetDiscovery(target="recommendations:50051", every=0)
    assert TargetDiscovery(target="[fd00::7]:50051").host == "fd00::7"


def test_an_address_channel_keeps_the_name_as_authority_and_tls_name() -> None:
    discovery = TargetDiscovery(target="recommendations.shop:50051")
    assert authority_options(discovery, True, ()) == (
        ("grpc.default_authority", "recommendations.shop:50051"),
        ("grpc.ssl_target_name_override", "recommendations.shop"),
    )
    assert address_target("fd00::7", 50051) == "[fd00::7]:50051"
    assert authority_options(discovery, False, (("grpc.default_authority", "mine"),)) == (
        ("grpc.default_authority", "mine"),
    )


async def test_a_call_in_flight_on_a_replica_that_leaves_finishes_before_its_channel_closes(
    replicas: Replicas,
) -> None:
    await replicas.start("127.0.0.1")
    second = await replicas.start("127.0.0.2")
    second.script.append(Step(delay=0.5))
    hosts = Hosts()
    hosts.table[NAME] = ["127.0.0.1", "127.0.0.2"]
    port = replicas.port
    async with _channel(hosts, port) as channel:
        stub = RecommendationsStub(channel)
        await _calls(stub, 1)  # round robin: the next call goes to 127.0.0.2
        slow = asyncio.ensure_future(stub.Recommend(REQUEST))
        await eventually(lambda: len(second.calls) == 1)
        hosts.table[NAME] = ["127.0.0.1"]
        await eventually(lambda: _targets(channel) == {f"127.0.0.1:{port}"})
        assert len(channel.targets.channels) == 2  # still carrying the slow call
        reply = await slow
        assert reply.recommendations
        await eventually(lambda: len(channel.targets.channels) == 1)


async def test_streams_go_to_the_discovered_addresses(replicas: Replicas) -> None:
    first = await replicas.start("127.0.0.1")
    second = await replicas.start("127.0.0.2")
    hosts = Hosts()
    hosts.table[NAME] = ["127.0.0.1", "127.0.0.2"]
    async with _channel(hosts, replicas.port) as channel:
        await channel.channel_ready()  # looks the name up first
        stub = RecommendationsStub(channel)
        for _ in range(4):
            books = [book async for book in stub.RecommendStream(REQUEST)]
            assert len(books) == 3
    assert len(first.calls) == len(second.calls) == 2


def test_the_bookstore_discovers_a_single_name_and_keeps_a_list() -> None:
    assert channel_targets(resolve_targets("recommendations:50051")) == TargetDiscovery(
        target="recommendations:50051"
    )
    assert channel_targets(resolve_targets("10.0.0.7:50051, 10.0.0.8:50051")) == [
        "10.0.0.7:50051",
        "10.0.0.8:50051",
    ]
    assert channel_targets(resolve_targets("127.0.0.1:50051")) == ["127.0.0.1:50051"]


async def test_tls_to_an_address_verifies_the_certificate_of_the_name() -> None:
    # The certificate names only the service, not any address: each address's
    # channel must check it against the name.
    authority = trustme.CA()
    issued = authority.issue_cert(NAME)
    backend = Backend()
    server = grpc.aio.server()
    add_RecommendationsServicer_to_server(backend, server)
    credentials = grpc.ssl_server_credentials(
        [(issued.private_key_pem.bytes(), issued.cert_chain_pems[0].bytes())]
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    hosts = Hosts()
    hosts.table[NAME] = ["127.0.0.1"]
    discovery = TargetDiscovery(target=f"{NAME}:{port}", every=EVERY, resolver=hosts.resolve)
    trust = grpc.ssl_channel_credentials(authority.cert_pem.bytes())
    try:
        async with AsyncChannel(discovery, ChannelOptions(credentials=trust)) as channel:
            reply = await RecommendationsStub(channel).Recommend(REQUEST, timeout=5.0)
            assert _targets(channel) == {f"127.0.0.1:{port}"}
    finally:
        await server.stop(None)
    assert reply.recommendations
    assert len(backend.calls) == 1
