"""Models for typed responses: pydantic adapters, built once per model type, and models sent as JSON.

pydantic (v2) is optional: nothing here imports it until a model is used,
and then a missing pydantic is a clear UsageError naming the extra to
install. A ``TypeAdapter`` is built once per model type and kept (building
one compiles a validator, which costs far more than validating a body), in
a bounded map so types made on the fly cannot grow it for ever. Bodies are
validated (``_response.validate``) straight from bytes, in pydantic's own parser.

Sending: ``json=`` may hold pydantic models anywhere in the value; each is
written as ``model_dump(mode="json", by_alias=True)``, so what is sent uses
the same field names (aliases) that validation reads.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Any

from microcall.errors import UsageError

# Distinct model types in a program are few; the bound only stops a program
# that makes types per call from leaking adapters.
MAX_ADAPTERS = 512

_adapters: OrderedDict[Any, Any] = OrderedDict()


def jsonable(value: Any) -> Any:
    """``json.dumps``' ``default``: a pydantic model as JSON data; TypeError for anything else."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def adapter_for(model: Any) -> Any:
    try:
        adapter = _adapters.get(model)
    except TypeError:  # an unhashable type form: build one each time
        return _new_adapter(model)
    if adapter is None:
        adapter = _adapters[model] = _new_adapter(model)
        if len(_adapters) > MAX_ADAPTERS:
            _adapters.popitem(last=False)
    return adapter


def _new_adapter(model: Any) -> Any:
    try:
        from pydantic import PydanticSchemaGenerationError, TypeAdapter
    except ImportError as exc:
        raise UsageError(
            "validating into a model needs pydantic 2: pip install 'microcall[pydantic]'"
        ) from exc
    try:
        return TypeAdapter(model)
    except PydanticSchemaGenerationError as exc:
        raise UsageError(f"pydantic cannot validate into {model!r}: {exc}") from exc
