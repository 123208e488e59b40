"""What the core needs of the gateway's sealer: the contract, not the cipher.

A reasoning item's ``encrypted_content`` is its text sealed by the gateway, so
that a stateless gateway gets its model's reasoning back on the next turn
without keeping it. The cipher and its keys live in the shell (``api.seal``,
AES-GCM); the core only calls these two methods. The plaintext is the
reasoning text as a JSON string token (what the transcoder holds), so that
sealing needs no decode.
"""

from __future__ import annotations

from typing import Protocol


class Sealer(Protocol):
    def seal(self, token: bytes) -> str:
        """``token`` (a JSON string token) sealed, as ASCII text for ``encrypted_content``."""
        ...

    def open(self, blob: str) -> str:
        """The text that ``blob`` seals; ``ValueError`` when it does not open (not sealed
        by a key this gateway holds, changed, or not a blob at all)."""
        ...
