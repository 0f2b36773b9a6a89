"""ChannelOptions: validation at construction, and which methods count as idempotent."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

import microcall
import microcall.examples_pb.recommendations_pb2
from microcall.errors import ConfigurationError
from microcall.grpc import ChannelOptions


def test_defaults() -> None:
    options = ChannelOptions()
    assert options.timeout == 10.0
    assert options.priority is None  # none sent: the server's default applies
    assert options.strategy is microcall.single()


def test_durations_are_normalised() -> None:
    assert ChannelOptions(timeout=timedelta(milliseconds=1500)).timeout == 1.5


@pytest.mark.parametrize(
    "settings",
    [
        {"timeout": -1},
        {"timeout": float("nan")},
        {"priority": "urgent"},
        {"strategy": "retry"},
        {"idempotent": ["not a name!"]},
        {"idempotent": [42]},
        {"retryable_codes": [grpc.StatusCode.OK]},
        {"retryable_codes": [grpc.StatusCode.DEADLINE_EXCEEDED]},
        {"retryable_codes": ["UNAVAILABLE"]},
        {"budget": 0.2},
        {"breaker": True},
        {"clock": object()},
    ],
)
def test_bad_settings_are_refused_at_construction(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        ChannelOptions(**settings)  # type: ignore[arg-type]


def test_methods_listed_by_name_or_service_are_idempotent() -> None:
    options = ChannelOptions(idempotent={"/shop.Cart/Get", "shop.Catalog"})
    assert options.is_idempotent("/shop.Cart/Get")
    assert not options.is_idempotent("/shop.Cart/Add")
    assert options.is_idempotent("/shop.Catalog/Search")


def test_a_single_name_is_not_taken_for_its_letters() -> None:
    options = ChannelOptions(idempotent="shop.Catalog")
    assert options.is_idempotent("/shop.Catalog/Search")


def test_a_proto_that_declares_no_side_effects_makes_a_method_idempotent() -> None:
    options = ChannelOptions()
    assert options.is_idempotent("/bookstore.Recommendations/Recommend")
    assert not options.is_idempotent("/bookstore.Recommendations/Unknown")
    assert not options.is_idempotent("/nowhere.Service/Method")
