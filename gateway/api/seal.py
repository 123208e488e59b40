"""Sealed reasoning: ``encrypted_content`` that any gateway holding the key can open.

A stateless gateway gives its model's reasoning to the client sealed, and opens
it when the client sends it back (``core.translate.reasoning.ReturnedReasoning``).
AES-256-GCM (``cryptography``): authenticated, so a changed blob does not open.

Blob: URL-safe base64 (no padding) of

    version (1 byte, 1) | key id (4 bytes) | nonce (12 bytes) | ciphertext + tag (16 bytes)

The key id is the first 4 bytes of SHA-256 of the key, so a process that holds
several keys (rotation: the first seals, every one opens) picks the right one;
version and key id are the associated data, so neither can be changed either.
The plaintext is the reasoning text as a JSON string token (``core.sealing``).
Nonces are random (96 bits): far below the 2**32 messages per key where that
starts to matter, for any gateway's lifetime per key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
_HEAD = 1 + 4  # version, key id
_NONCE = 12
_TAG = 16


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


class Sealer:
    """Seals with the first key, opens with any (``core.sealing.Sealer``)."""

    __slots__ = ("_seal_head", "_seal", "_open")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a Sealer needs at least one key")
        self._open = {key_id(k): AESGCM(k) for k in reversed(keys)}
        self._seal_head = bytes([VERSION]) + key_id(keys[0])
        self._seal = AESGCM(keys[0])

    @classmethod
    def random(cls) -> Sealer:
        """A sealer with a key of its own: what it seals only it can open."""
        return cls([AESGCM.generate_key(bit_length=256)])

    def seal(self, token: bytes) -> str:
        head = self._seal_head
        nonce = os.urandom(_NONCE)
        sealed = head + nonce + self._seal.encrypt(nonce, token, head)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def open(self, blob: str) -> str:
        try:
            data = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("not a sealed blob") from None
        if len(data) < _HEAD + _NONCE + _TAG or data[0] != VERSION:
            raise ValueError("not a sealed blob of this version")
        cipher = self._open.get(data[1:_HEAD])
        if cipher is None:
            raise ValueError("sealed with a key this gateway does not hold")
        nonce = data[_HEAD : _HEAD + _NONCE]
        try:
            token = cipher.decrypt(nonce, data[_HEAD + _NONCE :], data[:_HEAD])
            text = orjson.loads(token)
        except (InvalidTag, orjson.JSONDecodeError):
            raise ValueError("the blob does not open") from None
        if not isinstance(text, str):
            raise ValueError("the blob does not hold a text")
        return text
