from aiohttp import web

import microcall
from tests.conftest import Serve


async def test_get_round_trip(serve: Serve) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"timeout": request.headers["X-Request-Timeout"]})

    app = web.Application()
    app.router.add_get("/hello", hello)
    base = await serve(app)
    async with microcall.AsyncClient(base, timeout=2.0) as client:
        response = await client.get("/hello")
    assert response.status_code == 200
    assert 0 < float(response.json()["timeout"]) <= 2.0
