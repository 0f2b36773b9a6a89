"""The Catalog's Flask application: the production tutorial's REST service, done as it is done today.

* flask-smorest with marshmallow schemas (the maintained successor of the
  tutorial's Flask-RESTPlus): the OpenAPI document is generated from the
  schemas at ``/docs/openapi.json``, with Swagger UI at ``/docs/`` from
  flask-swagger-ui's packaged assets (nothing fetched from a CDN);
* SQLite by default (``CATALOG_DB``), seeded with :data:`.books.BOOKS`;
* microcall's WSGI middleware: the caller's deadline and priority, expired
  requests refused, priority shedding over a concurrency limit;
* Prometheus metrics summed over gunicorn's workers (``PROMETHEUS_MULTIPROC_DIR``),
  ``@timed`` on the queries, OpenTelemetry spans when an OTLP endpoint is set;
* answers carry ``Cache-Control`` and an ``ETag``, so a caller's microcall
  cache keeps them, and ``X-Seen-Deadline``: the deadline this hop received;
* the chaos protocol at ``/chaos``, shared by all workers through a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import marshmallow as ma
from flask import Flask, Response, abort, jsonify, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from flask_swagger_ui import get_swaggerui_blueprint
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import microcall
from microcall.demo.bookstore import books
from microcall.demo.bookstore._service import setup_tracing
from microcall.observe import timed
from microcall.observe.exposition import metrics_wsgi_app
from microcall.observe.prometheus import ServerMetrics
from microcall.observe.tracing import ServerTracing
from microcall.server import ServerOptions, Shedding, StaticLimit, trust_networks
from microcall.server.wsgi import WSGIMiddleware
from microcall.testing.chaos import Chaos
from microcall.testing.services import SEEN_DEADLINE_HEADER

# Fresh for 10 s in a caller's cache (CATALOG_MAX_AGE); after that a caller
# may still show it for 5 minutes while the Catalog fails (RFC 5861).
DEFAULT_MAX_AGE = 10
# Requests one worker serves at once before it sheds low priority first:
# gunicorn's gthread workers run this many threads (see catalog.py).
CONCURRENCY_LIMIT = 8
# Paths that never see injected faults: the probes and the switches themselves.
_EXEMPT = ("/healthz", "/metrics", "/chaos", "/docs")


def seed(path: str) -> None:
    """Create the books table in the SQLite file at ``path`` and fill it, once."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS books (id INTEGER PRIMARY KEY, title TEXT NOT NULL,"
            " author TEXT NOT NULL, year INTEGER NOT NULL, category TEXT NOT NULL,"
            " price_cents INTEGER NOT NULL)"
        )
        db.executemany(
            "INSERT OR IGNORE INTO books VALUES (?, ?, ?, ?, ?, ?)",
            [(b.id, b.title, b.author, b.year, b.category, b.price_cents) for b in books.BOOKS],
        )


class BookSchema(ma.Schema):
    """A book as the API shows it."""

    id = ma.fields.Int(required=True)
    title = ma.fields.Str(required=True)
    author = ma.fields.Str(required=True)
    year = ma.fields.Int(required=True)
    category = ma.fields.Str(required=True, validate=ma.validate.OneOf(books.CATEGORIES))
    price_cents = ma.fields.Int(required=True)


class BookQuerySchema(ma.Schema):
    """Filters of ``GET /books``."""

    category = ma.fields.Str(validate=ma.validate.OneOf(books.CATEGORIES))
    limit = ma.fields.Int(load_default=50, validate=ma.validate.Range(min=1, max=100))


class Store:
    """The books in SQLite: one connection per thread (sqlite3 connections are not shared)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path)
            db.row_factory = sqlite3.Row
            self._local.db = db
        yield db

    @timed("catalog_query_seconds", description="Time of one Catalog database query.")
    def list(self, category: str | None, limit: int) -> list[dict[str, Any]]:
        """Books in id order, of one category when given."""
        with self._db() as db:
            if category is None:
                rows = db.execute("SELECT * FROM books ORDER BY id LIMIT ?", (limit,))
            else:
                rows = db.execute(
                    "SELECT * FROM books WHERE category = ? ORDER BY id LIMIT ?", (category, limit)
                )
            return [dict(row) for row in rows]

    @timed("catalog_query_seconds", description="Time of one Catalog database query.")
    def get(self, book_id: int) -> dict[str, Any] | None:
        """One book, or None."""
        with self._db() as db:
            row = db.execute("SELECT * FROM books WHERE id = ?", (book_id,)).fetchone()
            return dict(row) if row is not None else None


def _register_books(api: Api, store: Store) -> None:
    blueprint = Blueprint("books", __name__, url_prefix="/books", description="The books on sale")

    @blueprint.route("")
    class BookList(MethodView):
        @blueprint.arguments(BookQuerySchema, location="query")  # type: ignore[untyped-decorator]
        @blueprint.response(200, BookSchema(many=True))  # type: ignore[untyped-decorator]
        def get(self, query: dict[str, Any]) -> list[dict[str, Any]]:
            """The books, optionally of one category."""
            return store.list(query.get("category"), query["limit"])

    @blueprint.route("/<int:book_id>")
    class BookItem(MethodView):
        @blueprint.response(200, BookSchema)  # type: ignore[untyped-decorator]
        def get(self, book_id: int) -> dict[str, Any]:
            """One book by its id."""
            book = store.get(book_id)
            if book is None:
                abort(404, description=f"no book {book_id}")
            return book

    api.register_blueprint(blueprint)


def _register_chaos(app: Flask, chaos: Chaos) -> None:
    @app.get("/chaos")
    def show_chaos() -> Response:
        return jsonify(chaos.settings.to_json())

    @app.post("/chaos")
    def change_chaos() -> Any:
        try:
            settings = chaos.update(json.loads(request.get_data() or b"{}"))
        except ValueError as error:
            return jsonify({"error": str(error)}), 400
        if settings.kill:
            chaos.update({})  # a restarted Catalog starts healthy
            # The gunicorn master is this worker's parent: stopping it stops every worker.
            threading.Timer(0.05, os.kill, (os.getppid(), signal.SIGTERM)).start()
        return jsonify(settings.to_json())

    @app.before_request
    def inject_fault() -> Any:
        if request.path.startswith(_EXEMPT):
            return None
        fault = chaos.fault_for(request.path)
        if fault.latency:
            time.sleep(fault.latency)
        if fault.error:
            return jsonify({"error": "injected failure"}), 503
        return None


def create_app(
    db_path: str | None = None,
    chaos_path: str | None = None,
    *,
    options: ServerOptions | None = None,
) -> Any:
    """The Catalog as a WSGI application (what gunicorn serves)."""
    db_path = db_path or os.environ.get("CATALOG_DB") or "catalog.sqlite"
    chaos_path = chaos_path or os.environ.get("CATALOG_CHAOS_FILE")
    seed(db_path)
    setup_tracing("catalog")
    store = Store(db_path)
    chaos = Chaos(chaos_path)
    max_age = int(os.environ.get("CATALOG_MAX_AGE", DEFAULT_MAX_AGE))
    cache_control = f"public, max-age={max_age}, stale-if-error=300"

    app = Flask("catalog")
    app.config.update(
        API_TITLE="Bookstore Catalog",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/docs",
        OPENAPI_JSON_PATH="openapi.json",
    )
    api = Api(app)
    _register_books(api, store)
    app.register_blueprint(
        get_swaggerui_blueprint("/docs", "/docs/openapi.json", config={"app_name": "Catalog"}),
        url_prefix="/docs",
    )
    _register_chaos(app, chaos)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.after_request
    def describe(response: Response) -> Response:
        deadline = microcall.current_deadline()
        if deadline is not None:
            response.headers[SEEN_DEADLINE_HEADER] = f"{deadline.remaining():.4f}"
        if request.path.startswith("/books") and response.status_code == 200:
            response.headers["Cache-Control"] = cache_control
            response.headers["ETag"] = '"' + hashlib.sha1(response.get_data()).hexdigest() + '"'
        return response

    options = options or ServerOptions(
        default_timeout=5.0,
        shedding=Shedding(limit=StaticLimit(limit=CONCURRENCY_LIMIT)),
        trust=trust_networks("127.0.0.0/8", "::1/128"),
        observers=[ServerMetrics(), ServerTracing()],
    )
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, options)  # type: ignore[method-assign]
    return DispatcherMiddleware(app, {"/metrics": metrics_wsgi_app()})
