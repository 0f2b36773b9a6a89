"""httpie-style request items: ``Header:value``, ``key==value``, ``key=value``, ``key:=json``.

::

    >>> items = parse_items(["X-Api-Key:abc", "q==dune", "title=Dune", "year:=1965"])
    >>> items.headers, items.params, items.json
    ({'X-Api-Key': 'abc'}, [('q', 'dune')], {'title': 'Dune', 'year': 1965})

The separator that appears first in an item decides its kind, as in httpie,
so ``url==http://x`` is a query parameter and ``note=a:b`` a JSON string
field. A backslash escapes a separator inside a key (``a\\=b=c``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from microcall.cli._common import CliError

# Longest separators first at the same position: ":=" before ":", "==" before "=".
_SEPARATOR = re.compile(r"(?<!\\)(:=|==|:|=)")


@dataclass(slots=True)
class RequestItems:
    """The headers, query parameters and JSON body fields a command line asked for."""

    headers: dict[str, str] = field(default_factory=dict)
    params: list[tuple[str, str]] = field(default_factory=list)
    json: dict[str, Any] | None = None

    def set_field(self, key: str, value: Any) -> None:
        if self.json is None:
            self.json = {}
        self.json[key] = value


def parse_items(items: list[str]) -> RequestItems:
    """Parse request items; a malformed one raises :class:`CliError`."""
    parsed = RequestItems()
    for item in items:
        match = _SEPARATOR.search(item)
        if match is None or match.start() == 0:
            raise CliError(
                f"bad request item {item!r}: expected Header:value, key==value, "
                "key=value or key:=json"
            )
        key = item[: match.start()].replace("\\", "")
        separator, value = match.group(1), item[match.end() :]
        if separator == ":":
            if not _is_token(key):
                raise CliError(f"bad header name {key!r} in {item!r}")
            parsed.headers[key] = value.strip()
        elif separator == "==":
            parsed.params.append((key, value))
        elif separator == "=":
            parsed.set_field(key, value)
        else:
            try:
                parsed.set_field(key, json.loads(value))
            except json.JSONDecodeError as error:
                raise CliError(f"bad JSON in {item!r}: {error.msg}") from None
    return parsed


# RFC 9110 token characters: what a header name may hold.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _is_token(name: str) -> bool:
    return bool(_TOKEN.match(name))
