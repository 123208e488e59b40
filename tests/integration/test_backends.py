"""The two HTTP servers (``[http] server``, ``serve --http``): the parametrised suite
really runs on each, and the command line picks one."""

from __future__ import annotations

import aiohttp

from tests.conftest import make_config


async def test_the_backend_is_the_one_asked_for(http_server: str, gateway_url: str) -> None:
    async with aiohttp.ClientSession() as s, s.get(gateway_url + "/models") as r:
        assert r.status == 200
        served_by = r.headers.get("Server", "")
    # aiohttp names itself in every answer; the lean server sends no Server header.
    assert ("aiohttp" in served_by) == (http_server == "aiohttp")


def test_the_command_line_chooses_the_server() -> None:
    from gateway.cli import _parser, build_config

    args = _parser().parse_args(
        ["serve", "--upstream", "http://127.0.0.1:1/v1", "--http", "aiohttp"]
    )
    assert build_config(args).http.server == "aiohttp"
    args = _parser().parse_args(["serve", "--upstream", "http://127.0.0.1:1/v1"])
    assert build_config(args).http.server == "lean"
    assert make_config("http://u/v1").http.server == "lean"
