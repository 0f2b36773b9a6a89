"""``microcall bookstore``: the bookstore package's own subcommands, reached from the command."""

from __future__ import annotations

import pytest

from microcall.cli import main


def test_its_subcommands_and_options_are_the_bookstore_s(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bookstore", "up", "--help"]) == 0
    assert "--replicas" in capsys.readouterr().out


def test_chaos_without_a_running_bookstore_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bookstore", "chaos", "no-such-service"]) == 2
    assert "no running bookstore with a service 'no-such-service'" in capsys.readouterr().err
