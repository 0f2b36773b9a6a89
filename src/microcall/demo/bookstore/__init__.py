"""The bookstore: the seeds' microservices running on microcall, on one machine.

Three services, each its own process (``python -m microcall.demo.bookstore.<service>``):

* :mod:`.catalog`: the books, over REST (Flask + flask-smorest under
  gunicorn, SQLite), with microcall's WSGI middleware;
* :mod:`.recommendations`: the gRPC tutorial's Recommendations service
  (grpc.aio behind microcall's interceptor, health and reflection);
* :mod:`.marketplace`: the web page a person opens (aiohttp), calling
  Recommendations with an ``AsyncChannel`` and the Catalog with an
  ``AsyncClient``, plus a live dashboard with chaos switches.

``python -m microcall.demo.bookstore up`` starts them all on 127.0.0.1;
``... scenario`` runs the scripted fault scenario (``make demo``); ``... chaos``
flips a fault on a running service. See docs/bookstore.md.
"""
