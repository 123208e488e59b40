"""What the core needs of the gateway's sealer: the contract, not the cipher.

A reasoning item's ``encrypted_content`` is its text sealed by the gateway, so
that a stateless gateway gets its model's reasoning back on the next turn
without keeping it. The cipher and its keys live in the shell (``api.seal``,
AES-GCM); the core only calls these two methods. The plaintext is the
reasoning text as a JSON string token (what the transcoder holds), so that
sealing needs no decode. A compaction item's summary is sealed the same way
(``translate.compaction``); ``opened`` opens either, or refuses it naming the item.
"""

from __future__ import annotations

from typing import Protocol

from gateway.errors import InvalidRequest


class Sealer(Protocol):
    def seal(self, token: bytes) -> str:
        """``token`` (a JSON string token) sealed, as ASCII text for ``encrypted_content``."""
        ...

    def open(self, blob: str) -> str:
        """The text that ``blob`` seals; ``ValueError`` when it does not open (not sealed
        by a key this gateway holds, changed, or not a blob at all)."""
        ...


def opened(sealer: Sealer | None, blob: str, i: int, advice: str) -> str:
    """The text that ``input[i]``'s ``encrypted_content`` seals; when it does not open
    (or there is no sealer), a 400 naming it, code ``invalid_encrypted_content``, that
    ends with ``advice`` (what to send instead)."""
    if sealer is not None:
        try:
            return sealer.open(blob)
        except ValueError:
            pass
    raise InvalidRequest(
        f"The encrypted content of input[{i}] could not be opened: it was not sealed by this "
        f"gateway's key (or was changed). {advice}",
        param=f"input[{i}].encrypted_content",
        code="invalid_encrypted_content",
    )
