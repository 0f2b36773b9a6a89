"""Response classification: is an outcome an answer, a failure worth retrying, or final?

The default follows microcall's wire protocol: a transport failure, a 5xx, a
408 and a 429 are retriable failures; every other status is an answer (a 404
is the server telling us something, not failing). A response carrying
``X-Do-Not-Retry: 1`` is final whatever its status: the server knows another
attempt is pointless (it refused expired work, say).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from microcall._wire import DO_NOT_RETRY_HEADER, says_do_not_retry
from microcall.errors import CallError, DeadlineExceeded

if TYPE_CHECKING:
    from microcall._response import Response

RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Verdict(enum.Enum):
    ACCEPT = "accept"  # an answer: the call is done
    RETRY = "retry"  # a failure another attempt may fix
    STOP = "stop"  # a failure no attempt will fix: end the call with it


Classifier = Callable[["Response | None", "CallError | None"], Verdict]
"""``classifier(response, error) -> Verdict``; exactly one of the two is not None."""


def do_not_retry(response: Response) -> bool:
    return says_do_not_retry(response.headers.get(DO_NOT_RETRY_HEADER))


def default_classifier(response: Response | None, error: CallError | None) -> Verdict:
    """microcall's default classification (see the module docstring)."""
    if response is None:
        return Verdict.STOP if isinstance(error, DeadlineExceeded) else Verdict.RETRY
    status = response.status_code
    failed = status >= 500 or status in RETRIABLE_STATUSES
    if not failed:
        return Verdict.ACCEPT
    return Verdict.STOP if do_not_retry(response) else Verdict.RETRY
