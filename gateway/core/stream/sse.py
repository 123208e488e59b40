"""Sans-IO Server-Sent Events parser (the upstream side of a stream).

``SseParser().feed(bytes) -> list[bytes]`` returns the ``data`` payload of
every event completed by the bytes fed so far; input may be split anywhere
(mid-line, inside a CRLF, inside a UTF-8 character). Grammar, per the WHATWG
``text/event-stream`` rules:

- lines end with LF, CRLF or a lone CR (a CRLF split across two feeds counts once);
- a blank line ends an event; its ``data`` lines are joined with ``b"\\n"``;
- ``data:value`` and ``data: value`` are the same (one optional space is removed);
- a line without a colon is a field with an empty value (``data`` alone adds ``b""``);
- comment lines (``:...``) and other fields (``event:``, ``id:``, ``retry:``) are ignored;
- an event without any ``data`` line produces nothing.

Not handled: a UTF-8 byte-order mark at the start of the stream (chat servers
never send one; it would make the first line's field name unknown).

End of input: the SSE rules discard an unterminated event at EOF. ``flush()``
instead *reports* it (the bytes after the last blank line, read as if a blank
line followed), so the caller can tell a clean end from a stream cut mid-event;
the transcoder treats a non-``None`` result as a broken stream unless the
upstream had already finished. ``flush()`` then resets the parser.

Cost: the common read holds one or several whole ``data: {...}\\n\\n`` events
and nothing else; it is handled with no Python loop at all: one ``in`` scan for
CR, one ``split`` between events, and one join and ``in`` scan for LF to confirm
the shape. Those scans test an int (``13 in data``): in CPython 3.11 ``bytes in
bytes`` first tries the needle as an int, and raising and clearing that
TypeError costs more than the scan itself.
Partial events are kept as a list of pieces and joined only once a blank line
can have arrived, so a large event fed in many small reads is not re-copied on
every read.
"""

from __future__ import annotations

from gateway.limits import MAX_UPSTREAM_EVENT

__all__ = ["SseParser", "SseTooLarge"]

# An unterminated event is buffered until its blank line; an upstream that never
# sends one must not grow the buffer without end (``limits.MAX_UPSTREAM_EVENT``).


class SseTooLarge(ValueError):
    """An event grew past ``limits.MAX_UPSTREAM_EVENT`` without ending."""


_LF = b"\n"
_CR = b"\r"
_BLANK = b"\n\n"
_DATA_SP = b"data: "
_NEXT = b"\n\ndata: "  # between two whole events in the common read
_DATA = b"data"


class SseParser:
    __slots__ = ("_parts", "_size", "_tail_lf", "_skip_lf", "lf_free")

    def __init__(self) -> None:
        # No payload of the last feed holds an LF (only multi-line ``data`` makes one).
        self.lf_free = True
        self._parts: list[bytes] = []  # unterminated event text, LF-normalised
        self._size = 0  # bytes in _parts
        self._tail_lf = False  # the last kept piece ends with LF
        self._skip_lf = False  # the last fed byte was CR: drop a leading LF next

    def feed(self, data: bytes) -> list[bytes]:
        """Bytes from the wire → the data payloads of the events they complete."""
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 10:
                data = data[1:]
        if not data:
            return []
        if 13 in data:  # (an int: `bytes in bytes` raises and clears a TypeError first)
            self._skip_lf = data[-1] == 13
            data = data.replace(b"\r\n", _LF).replace(_CR, _LF)
        parts = self._parts
        if parts:
            if data.find(_BLANK) < 0 and not (self._tail_lf and data[0] == 10):
                parts.append(data)  # no event can have ended: just keep the piece
                self._tail_lf = data[-1] == 10
                self._size += len(data)
                if self._size > MAX_UPSTREAM_EVENT:
                    raise SseTooLarge(f"an upstream event is over {MAX_UPSTREAM_EVENT} bytes")
                return []
            parts.append(data)
            data = b"".join(parts)
            parts.clear()
            self._size = 0
        if data[-2:] == _BLANK and data[:6] == _DATA_SP:  # (slices: no argument parsing)
            # The common read: whole `data: ...` events and nothing else; then no
            # payload holds an LF. (A join and a memchr cost a tenth of
            # bytes.count on a whole read; measured with callgrind.)
            payloads = data.split(_NEXT)  # (not data[6:-2]: no copy of the whole read)
            payloads[0] = payloads[0][6:]
            payloads[-1] = payloads[-1][:-2]
            if 10 not in (payloads[0] if len(payloads) == 1 else b"".join(payloads)):
                self._tail_lf = False
                self.lf_free = True
                return payloads
        return self._blocks(data)

    def _blocks(self, data: bytes) -> list[bytes]:
        """The general case: split on blank lines, keep the unterminated rest."""
        blocks = data.split(_BLANK)
        rest = blocks.pop()
        if rest:
            self._parts.append(rest)
            self._size = len(rest)
            if self._size > MAX_UPSTREAM_EVENT:
                raise SseTooLarge(f"an upstream event is over {MAX_UPSTREAM_EVENT} bytes")
        self._tail_lf = rest[-1:] == _LF
        out: list[bytes] = []
        lf_free = True
        for block in blocks:
            if block[:6] == _DATA_SP and 10 not in block:
                out.append(block[6:])  # one `data: ...` line
            elif block:
                payload = _event_data(block)
                if payload is not None:
                    out.append(payload)
                    lf_free = lf_free and 10 not in payload
        self.lf_free = lf_free
        return out

    def flush(self) -> bytes | None:
        """At EOF: the data of an unterminated trailing event, or ``None``; resets."""
        block = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._tail_lf = self._skip_lf = False
        return _event_data(block) if block else None


def _event_data(block: bytes) -> bytes | None:
    """The general case: a block of LF-separated lines (it may hold empty lines)."""
    data: list[bytes] | None = None
    for line in block.split(_LF):
        if not line:  # only a block's first line can be empty: it ends no event with data
            continue
        colon = line.find(b":")
        if colon == 0:
            continue  # comment
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == _DATA:
            if data is None:
                data = [value]
            else:
                data.append(value)
    return None if data is None else _LF.join(data)
