"""Where every id of the output comes from: one ``Ids`` object, injected.

Response, item and call ids are opaque labels, not secrets (nothing is ever
looked up by id), so they come from ``random`` (reseeded from the OS in every
forked worker), not from a system call per id: ``os.urandom`` was 4% of a
streamed answer's CPU. Tests inject an ``Ids`` of their own for stable output.
"""

from __future__ import annotations

import string
from random import choices, getrandbits

RESPONSE = "resp_"
MESSAGE = "msg_"
FUNCTION_CALL = "fc_"
CUSTOM_TOOL_CALL = "ctc_"
REASONING = "rs_"
COMPACTION = "cmp_"

_ALNUM = string.ascii_letters + string.digits


class Ids:
    __slots__ = ()

    def new(self, prefix: str) -> str:
        """``prefix`` (``resp_``, ``msg_``, ``fc_``, ``ctc_``, ``rs_``, ``cmp_``) + 48 hex
        characters, like OpenAI's ids."""
        return prefix + getrandbits(192).to_bytes(24, "big").hex()  # (2.4x f"{:048x}")

    def call(self) -> str:
        """A tool call id for a call the upstream sent without one: ``call_`` + 24 letters
        and digits."""
        return "call_" + "".join(choices(_ALNUM, k=24))


IDS = Ids()
