"""Channels are TLS by default; plaintext only on this machine or when asked for."""

from __future__ import annotations

import grpc
import pytest

from microcall.errors import ConfigurationError
from microcall.grpc import ChannelOptions
from microcall.grpc._security import channel_credentials, is_local


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50051",
        "127.8.9.10:50051",
        "localhost:50051",
        "LOCALHOST",
        "[::1]:50051",
        "::1",
        "dns:///localhost:50051",
        "ipv4:127.0.0.1:50051",
        "ipv6:[::1]:50051",
        "unix:/run/recommendations.sock",
        "unix-abstract:recommendations",
    ],
)
def test_targets_on_this_machine_are_local(target: str) -> None:
    assert is_local(target)


@pytest.mark.parametrize(
    "target",
    [
        "recommendations:50051",
        "recommendations.svc.cluster.local:443",
        "dns:///recommendations:50051",
        "10.0.0.7:50051",
        "[2001:db8::1]:443",
        "localhost.example.com:443",
        "",
    ],
)
def test_other_targets_are_not(target: str) -> None:
    assert not is_local(target)


def test_a_remote_target_gets_verified_tls_by_default() -> None:
    credentials = channel_credentials("recommendations:50051", None, insecure=False)
    assert isinstance(credentials, grpc.ChannelCredentials)


def test_a_local_target_or_an_explicit_choice_gets_plaintext() -> None:
    assert channel_credentials("127.0.0.1:50051", None, insecure=False) is None
    assert channel_credentials("recommendations:50051", None, insecure=True) is None


def test_given_credentials_are_used_as_given() -> None:
    given = grpc.ssl_channel_credentials()
    assert channel_credentials("127.0.0.1:50051", given, insecure=False) is given


def test_insecure_and_credentials_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="insecure"):
        ChannelOptions(insecure=True, credentials=grpc.ssl_channel_credentials())
