"""``microcall bookstore up | scenario | chaos``: the bookstore of docs/bookstore.md.

The subcommands and their options are the bookstore package's own
(``python -m microcall.demo.bookstore``); this passes the rest of the command
line on, so the two never drift apart.
"""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``bookstore`` subcommand."""
    bookstore = commands.add_parser(
        "bookstore",
        help="run the bookstore: up (keep it running), scenario (faults, report), chaos",
        description=(
            "The seeds' bookstore on this machine: a Marketplace page, Recommendations over "
            "gRPC and a Catalog over REST. 'up' starts it and prints the URLs, 'scenario' runs "
            "the scripted faults and writes a report, 'chaos SERVICE ...' flips a fault."
        ),
    )
    # Everything after the subcommand's name (``up --help`` included) goes on.
    bookstore.add_argument("rest", nargs=argparse.REMAINDER, metavar="up|scenario|chaos ...")
    bookstore.set_defaults(command=_run)


def _run(arguments: argparse.Namespace) -> int:
    from microcall.demo.bookstore.__main__ import main

    rest: list[str] = arguments.rest
    try:
        return main(rest)
    except SystemExit as exit_:  # argparse's own --help and errors
        return exit_.code if isinstance(exit_.code, int) else 2
