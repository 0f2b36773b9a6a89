"""``python -m bench.NAME [--quick]``: run one benchmark module on its own and print its section."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from bench import BenchEnv


def main(run: Callable[[BenchEnv], str], name: str, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}")
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat")
    arguments = parser.parse_args(argv)
    print(run(BenchEnv.create(quick=arguments.quick)))
    return 0
