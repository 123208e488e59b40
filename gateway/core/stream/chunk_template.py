"""Text chunks recognised by their bytes: a per-stream template of the plain text chunk.

The servers we front send the text chunks of one stream byte-identical but for
the content string: vLLM, SGLang and Ollama repeat the same id, created, model
and field order in every chunk. Once the transcoder has decoded one such chunk
as a ``PlainChunk`` (one choice, index 0, only text), the bytes before and after
its content token are the stream's template; a later payload that is exactly
``prefix + token + suffix``, with ``token`` one valid JSON string, is the same
JSON document with another string in the same place, so it is a plain text
chunk with that content, and needs no decoding of its own.

Why it is sound:

- ``learn`` proves where the content slot is: it puts a probe string in the
  candidate place, decodes that document as a ``PlainChunk`` and requires the
  content to be the probe (which occurs once in the document) and no usage.
  Any other valid JSON string token in that place parses the same way.
- A candidate token must be exactly one JSON string: it starts and ends with
  a quote and decodes as one string with nothing after it (msgspec checks
  escapes, control characters and UTF-8), so it is spliced into the output
  exactly as the slower path would splice it. ``run`` checks a whole run's
  tokens at once: decoded as a list, the values must be the tokens themselves.

Reasoning chunks (``reasoning_content`` or ``reasoning`` and nothing else) get a
template of their own the same way, proven with their plain decoder.

A stream whose chunks differ in more than the content (a usage block in every
chunk, a ``created`` that ticks) simply does not match and takes the decoding
path; the transcoder may learn again from a later chunk.

``run`` checks a whole run of payloads with a handful of C-level calls (a few
joins and comparisons against the template, one decode of the tokens alone):
what makes an upstream read that holds many chunks cheap. See bench/README.md
for the measured effect.
"""

from __future__ import annotations

from operator import itemgetter

import msgspec

from gateway.core.wire.chunks import PLAIN_DECODER

__all__ = ["ChunkTemplate"]

LEARN_TRIES = 4  # places of the token in a chunk tried as the content's place

# Valid JSON, and not something a model streams as a token.
PROBE = b'"\\u0000gateway-probe\\u0000"'

_LF = b"\n"
_NUL = b"\x00"
_QUOTE = 34  # '"'
_RAWS = msgspec.json.Decoder(list[msgspec.Raw])
_TOKEN = msgspec.json.Decoder(str)


class ChunkTemplate:
    __slots__ = ("prefix", "suffix", "_lp", "_ls", "_sep", "_cut")

    def __init__(self, prefix: bytes, suffix: bytes) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self._lp = len(prefix)
        self._ls = len(suffix)
        # Between two matching payloads joined with LF (payloads given to ``run``
        # hold no LF, and neither does the template).
        self._sep = suffix + _LF + prefix
        self._cut = itemgetter(slice(self._lp, -self._ls))  # payload -> its token

    @classmethod
    def learn(
        cls, payload: bytes, token: bytes, decoder: msgspec.json.Decoder = PLAIN_DECODER
    ) -> ChunkTemplate | None:
        """The template of ``payload``, a plain text chunk whose content is ``token``.

        ``decoder`` is the plain kind's (``chunks.PLAIN_DECODERS``: text, or reasoning in
        either field name): its view's ``choices[0].delta.content`` is the proven slot.
        ``None`` when the content's place cannot be proven (or the payload holds
        an LF, which ``run`` uses as its separator).
        """
        if 10 in payload or token == PROBE:  # (10: LF; an int test is the cheap one)
            return None
        start = payload.find(token)
        tries = LEARN_TRIES  # each try decodes the payload: bounded, whatever the upstream sends
        while start >= 0 and tries:
            tries -= 1
            prefix = payload[:start]
            suffix = payload[start + len(token) :]
            doc = prefix + PROBE + suffix
            if doc.count(PROBE) == 1:
                try:
                    view = decoder.decode(doc)
                except ValueError:
                    pass
                else:
                    if view.usage is None and bytes(view.choices[0].delta.content) == PROBE:
                        return cls(prefix, suffix)
            start = payload.find(token, start + 1)
        return None

    def token(self, payload: bytes) -> bytes | None:
        """The content token of a payload that matches, else ``None``.

        The token may be ``b'""'`` (a chunk with empty text).
        """
        # Slices compared, not startswith/endswith: their argument parsing costs more.
        size = len(payload)
        if payload[: self._lp] != self.prefix or payload[size - self._ls :] != self.suffix:
            return None
        token = payload[self._lp : size - self._ls]
        if len(token) < 2 or token[0] != _QUOTE or token[-1] != _QUOTE:
            return None
        try:
            _TOKEN.decode(token)
        except ValueError:  # msgspec.DecodeError, or UnicodeDecodeError for bad UTF-8
            return None
        return token

    def run(self, payloads: list[bytes], start: int) -> tuple[int, list[bytes]]:
        """How many payloads from ``start`` on match, and their non-empty tokens.

        The run ends before the payloads at the end that do not start and end like
        the template (a read's finish, usage and ``[DONE]`` chunks; the text chunks
        after a run of reasoning chunks, which end alike). ``(0, [])``
        when the run cannot be confirmed as a whole; the caller then goes
        payload by payload. The payloads must hold no LF (the SSE parser says so).
        """
        prefix, suffix = self.prefix, self.suffix
        end = len(payloads)
        while end > start and not (
            payloads[end - 1].endswith(suffix) and payloads[end - 1].startswith(prefix)
        ):
            end -= 1
        count = end - start
        if count < 2:
            return 0, []
        block = payloads[start:end]
        lp = self._lp
        tokens = list(map(self._cut, block))
        # The block, joined with LF, must equal prefix + tokens joined with
        # suffix+LF+prefix + suffix: then every payload is prefix + its token +
        # suffix (a payload shorter than prefix + suffix makes the lengths differ).
        whole = _LF.join(block)
        expected = self._sep.join(tokens)
        if not (
            len(whole) == lp + len(expected) + self._ls
            and whole.startswith(prefix)
            and whole.startswith(expected, lp)
            and whole.endswith(suffix)
        ):
            return 0, []
        # Each token must be exactly one JSON string. Decoded as a list of Raw, the
        # values are checked JSON (escapes, control characters, surrogates; not
        # UTF-8, hence the decode) and must be the tokens themselves: joined with
        # NUL (which valid JSON cannot hold), values and tokens are the same
        # bytes; and each starts with a quote. A count alone is not enough: the
        # tokens '"","' and '"' join to '["",","]', two valid strings that
        # straddle the join's comma.
        joined = b"[" + b",".join(tokens) + b"]"
        try:
            values = _RAWS.decode(joined)
            joined.isascii() or joined.decode()
        except ValueError:  # msgspec.DecodeError, or UnicodeDecodeError for bad UTF-8
            return 0, []
        bounds = _NUL.join(tokens)
        if _NUL.join(values) != bounds:
            return 0, []
        if bounds[0] != _QUOTE or bounds.count(b'\x00"') != count - 1:
            return 0, []  # a value that is not a string (a number, null, an object)
        # An empty string token '""' (no text) starts the join or follows a NUL.
        if bounds[:2] == b'""' or bounds.find(b'\x00""') >= 0:
            tokens = [token for token in tokens if len(token) > 2]
        return count, tokens
