"""bench/floor_gateway.py, the identity row's floor: the real gateway process in which a
request with an Idempotency-Key only has a copy of its answer kept. If the floor ever
did the store's work (replayed, or held a key), its paired ratio would no longer be the
least a store can cost; if it stopped answering like the gateway, no ratio at all."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import FakeUpstream, completion, sdk
from tests.integration.ops_support import GatewayProcess

FLOOR = str(Path(__file__).resolve().parents[2] / "bench" / "floor_gateway.py")
KEY = {"Idempotency-Key": "the-same-key"}


async def test_the_floor_answers_as_the_gateway_and_never_replays(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.reply = upstream.json_reply(completion("made again"))
    serving = ["--upstream", upstream.url, "--model", "m1", "--log-level", "WARNING"]
    floor, real = GatewayProcess(serving, tmp_path), GatewayProcess(serving, tmp_path)
    try:
        floor.start([sys.executable, FLOOR, *floor.args])
        real.start()
        await floor.ready()
        await real.ready()
        client = sdk(f"http://127.0.0.1:{floor.port}/v1")
        for _ in range(2):
            raw = await client.responses.with_raw_response.create(
                model="m1", input="Hi", extra_headers=KEY
            )
            assert raw.parse().output_text == "made again"
            assert "idempotent-replayed" not in raw.headers
        assert len(upstream.received) == 2  # each ran: nothing is held or replayed
        await client.close()
        client = sdk(f"http://127.0.0.1:{real.port}/v1")  # the real gateway: the second replays
        for _ in range(2):
            raw = await client.responses.with_raw_response.create(
                model="m1", input="Hi", extra_headers=KEY
            )
        assert raw.headers["idempotent-replayed"] == "true"
        assert len(upstream.received) == 3
        await client.close()
    finally:
        floor.stop()
        real.stop()
