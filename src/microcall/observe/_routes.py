"""Route templates, as each framework knows them: the label a request is counted under.

A metric labelled with the raw path would grow a series per user id (or per
path a scanner makes up), so requests are labelled with the template of the
route that matched (``/books/{id}``), and with a fixed ``_OTHER`` when none
did. Where the template comes from:

* aiohttp: the matched resource's ``canonical`` (sub-application prefixes
  included);
* ASGI: Starlette's (and FastAPI's) ``scope["route"]``, with the templates of
  any ``Mount`` above it prefixed;
* WSGI: Flask's ``request.url_rule``, read from the environ while the
  response starts (Flask clears it before returning).

Any other ASGI or WSGI framework can name the route itself by setting
``scope["microcall.route"]`` / ``environ["microcall.route"]`` (in Django:
``request.META["microcall.route"] = request.resolver_match.route``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from aiohttp import web

ROUTE_KEY: Final = "microcall.route"

# Starlette's routes define __eq__ and so cannot be dict keys; templates are
# cached by identity, the route kept alive beside its template so an id is
# never reused while cached. An application has a fixed set of routes; the
# cap only guards against applications built and dropped again and again.
_MAX_CACHED = 4096
_templates: dict[int, tuple[object, str]] = {}


def aiohttp_route(request: web.Request) -> str | None:
    """The canonical template of the resource that matched ``request``, or None."""
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def asgi_route(scope: Mapping[str, Any], app: object = None) -> str | None:
    """The template of the route a Starlette router matched (mounts included), or None.

    ``app`` is ``scope["app"]`` as it was when the request reached the
    middleware: the outermost application, whose routes include the mounts
    (each mounted Starlette application replaces ``scope["app"]`` with itself).
    """
    hint = scope.get(ROUTE_KEY)
    if isinstance(hint, str):
        return hint
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    cached = _templates.get(id(route))
    if cached is not None and cached[0] is route:
        return cached[1]
    found = _find(getattr(app or scope.get("app"), "routes", ()), route, "")
    template = path if found is None else found
    if len(_templates) >= _MAX_CACHED:
        _templates.clear()
    _templates[id(route)] = (route, template)
    return template


# How far down a chain of wrapping middlewares (each keeping the next in
# ``.app``, as Starlette's and most ASGI middlewares do) the routes are sought.
_MAX_WRAPPERS = 16


def routed_app(app: object) -> object | None:
    """The first application with ``routes`` in ``app`` and the ones it wraps, or None."""
    for _ in range(_MAX_WRAPPERS):
        if app is None or getattr(app, "routes", None) is not None:
            return app
        app = getattr(app, "app", None)
    return None


def _find(routes: Iterable[object], target: object, prefix: str) -> str | None:
    for route in routes:
        path = getattr(route, "path", "")
        if not isinstance(path, str):
            path = ""
        if route is target:
            return prefix + path
        children = getattr(route, "routes", None)
        if children:
            found = _find(children, target, prefix + path)
            if found is not None:
                return found
    return None


def wsgi_route(environ: Mapping[str, Any]) -> str | None:
    """Flask's matched rule (while the request is still in the environ), or None."""
    hint = environ.get(ROUTE_KEY)
    if isinstance(hint, str):
        return hint
    rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
    template = getattr(rule, "rule", None)
    return template if isinstance(template, str) else None
