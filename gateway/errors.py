"""The gateway's one exception tree, and its OpenAI wire form.

    GatewayError                      status  type                   code
    ├── ClientError
    │   ├── InvalidRequest            400     invalid_request_error  (given)
    │   │   └── Unsupported           400     invalid_request_error  unsupported_parameter
    │   ├── Unauthorized              401     invalid_request_error  invalid_api_key
    │   ├── NotFound                  404     invalid_request_error  (given)
    │   │   └── ModelNotFound         404     invalid_request_error  model_not_found
    │   ├── MethodNotAllowed          405     invalid_request_error  null
    │   ├── RequestTimeout            408     invalid_request_error  request_timeout
    │   ├── RequestTooLarge           413     invalid_request_error  request_too_large
    │   ├── UnsupportedMediaType      415     invalid_request_error  unsupported_content_encoding
    │   ├── ExpectationFailed         417     invalid_request_error  expectation_failed
    │   ├── IdempotencyKeyReused      422     invalid_request_error  idempotency_key_reused
    │   ├── UpgradeRequired           426     invalid_request_error  upgrade_required
    │   ├── RateLimited               429     requests               rate_limit_exceeded
    │   └── HeadersTooLarge           431     invalid_request_error  request_header_fields_too_large
    ├── Overloaded                    503     server_error           server_overloaded
    ├── ShuttingDown                  503     server_error           server_shutting_down
    ├── StoreUnavailable              503     server_error           idempotency_store_unavailable
    ├── UpstreamError
    │   ├── UpstreamRejected          4xx     (the upstream's)       (the upstream's)
    │   │   ├── ContextLengthExceeded 400     invalid_request_error  context_length_exceeded
    │   │   ├── InputNotSupported     400     invalid_request_error  unsupported_input
    │   │   └── UpstreamRateLimited   429     requests               rate_limit_exceeded
    │   ├── UpstreamUnavailable       502     server_error           server_error
    │   │   ├── UpstreamUnreachable   502     server_error           server_error
    │   │   └── UpstreamBusy          503     server_error           server_overloaded
    │   ├── UpstreamBadResponse       502     server_error           server_error
    │   └── UpstreamTimeout           504     server_error           (the phase: see below)
    └── InternalError                 500     server_error           server_error

"Full, retry later" is one answer wherever it comes from (the gateway's own
bounds: ``Overloaded``; an upstream that is full or answered 503: ``UpstreamBusy``):
503, code ``server_overloaded``, with ``Retry-After``. ``UpstreamTimeout``'s code
names the phase that ran out: ``upstream_connect_timeout``,
``upstream_headers_timeout`` (queueing and prefill), ``upstream_chunk_timeout``
(the gap between two chunks) or ``upstream_request_timeout`` (the whole request).

Foreign exceptions are translated at their boundary (HTTP parsing in
``http.connection``, request decoding in ``api.body``, the upstream client in
``upstream``); everything that reaches the wire is a ``GatewayError``.
``GatewayError.body`` is the answer's body for an HTTP error before a stream starts
(``api.endpoints`` sends it); after that, the transcoder's ``fail`` reports
in-band; ``headers`` are extra headers of that answer (``RateLimited``'s
Retry-After and x-ratelimit-*). ``missing`` and ``body_too_large`` build the two
errors that several layers raise, in one wording.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "server_error"
    headers: dict[str, str] | None = None  # extra headers of the error answer
    replica = ""  # an upstream's failure: the base URL of the replica (logs, metrics)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.to_dict())


class ClientError(GatewayError):
    status = 400
    type = "invalid_request_error"
    code: str | None = None


class InvalidRequest(ClientError):
    pass


class Unsupported(InvalidRequest):
    code = "unsupported_parameter"


class Unauthorized(ClientError):
    """A ``/v1/*`` request without a valid client API key (when keys are configured)."""

    status = 401
    code = "invalid_api_key"


class NotFound(ClientError):
    status = 404


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ClientError):
    status = 405


class RequestTimeout(ClientError):
    """The client took too long to send its request head or the rest of its body."""

    status = 408
    code = "request_timeout"


class RequestTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class UnsupportedMediaType(ClientError):
    """A request body in a Content-Encoding the gateway does not decode."""

    status = 415
    code = "unsupported_content_encoding"


class ExpectationFailed(ClientError):
    status = 417
    code = "expectation_failed"


class IdempotencyKeyReused(ClientError):
    """An Idempotency-Key already used (or in use) with another request body."""

    status = 422
    code = "idempotency_key_reused"


class UpgradeRequired(ClientError):
    """A plain GET of a route that is a WebSocket (``GET /v1/responses``)."""

    status = 426
    code = "upgrade_required"
    headers = {"Upgrade": "websocket"}


class RateLimited(ClientError):
    """A client API key over its requests per minute or requests in flight."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: int, remaining: int, reset: float) -> None:
        super().__init__(message)
        wait = max(1, int(reset + 0.999))
        self.headers = {
            "Retry-After": str(wait),
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(max(0, remaining)),
            "x-ratelimit-reset-requests": f"{max(reset, 0.0):.3f}s",
        }


class HeadersTooLarge(ClientError):
    """The request line, a header line, the header count or the whole head is over its limit."""

    status = 431
    code = "request_header_fields_too_large"


OVERLOADED = "server_overloaded"


def retry_after(seconds: float) -> dict[str, str]:
    """The Retry-After header for a wait of ``seconds`` (whole seconds, at least 1)."""
    return {"Retry-After": str(max(1, int(seconds + 0.999)))}


RETRY_SOON = retry_after(1)


class Overloaded(GatewayError):
    """The gateway holds as many connections or requests as it is configured to."""

    status = 503
    code = OVERLOADED
    headers = RETRY_SOON

    def __init__(self, message: str, *, wait: float | None = None) -> None:
        super().__init__(message)
        if wait is not None:
            self.headers = retry_after(wait)


class ShuttingDown(GatewayError):
    """The gateway is draining (SIGTERM): a stream still open at the drain's deadline
    ends with this (``response.failed``)."""

    status = 503
    code = "server_shutting_down"


class StoreUnavailable(GatewayError):
    """The idempotency store (Redis) cannot be reached: a request with an
    Idempotency-Key is refused rather than run without its protection."""

    status = 503
    code = "idempotency_store_unavailable"


class UpstreamError(GatewayError):
    status = 502
    # The upstream server answered this (a status of its own): it is alive, whatever it
    # said; False for what happened without an answer (refused, timed out, cut, garbage).
    answered = False


class UpstreamRejected(UpstreamError):
    """The upstream answered 4xx: keep its status and message, in our envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message, param=param)
        self.status = status
        self.type = type or "invalid_request_error"
        self.code = code


class ContextLengthExceeded(UpstreamRejected):
    """The upstream said the request does not fit the model's context (in its words)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message, code=CONTEXT_LENGTH_EXCEEDED)


class InputNotSupported(UpstreamRejected):
    """The upstream said its model cannot take this kind of input (images to a text-only
    model), whatever status it gave: the request's fault, named as its ``input``."""

    def __init__(self, message: str) -> None:
        super().__init__(
            400,
            f"The model cannot take this input: {message}",
            param="input",
            code="unsupported_input",
        )


class UpstreamRateLimited(UpstreamRejected):
    """The upstream answered 429: the client's rate limit, with the upstream's Retry-After."""

    def __init__(self, message: str, wait: float | None) -> None:
        super().__init__(429, message, type="requests", code="rate_limit_exceeded")
        self.headers = retry_after(wait if wait is not None else 1)


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamUnreachable(UpstreamUnavailable):
    """No connection could be made: the request never reached the upstream."""


class UpstreamBusy(UpstreamUnavailable):
    """The upstream is full: every connection to it is in use and none came free in
    time, or it answered 503. The same answer as ``Overloaded``."""

    status = 503
    code = OVERLOADED
    headers = RETRY_SOON

    def __init__(self, message: str, *, wait: float | None = None, answered: bool = False):
        super().__init__(message)
        self.answered = answered  # the upstream said so (503), not the gateway's own cap
        self.wait = wait  # the upstream's Retry-After, when it gave one
        if wait is not None:
            self.headers = retry_after(wait)


class UpstreamBadResponse(UpstreamError):
    pass


CONNECT_TIMEOUT = "upstream_connect_timeout"
HEADERS_TIMEOUT = "upstream_headers_timeout"
CHUNK_TIMEOUT = "upstream_chunk_timeout"
REQUEST_TIMEOUT = "upstream_request_timeout"


class UpstreamTimeout(UpstreamError):
    """An upstream phase ran out of time; ``code`` names it (the module's docstring)."""

    status = 504
    code = HEADERS_TIMEOUT


class InternalError(GatewayError):
    pass


def missing(param: str, *, alternative: str | None = None) -> InvalidRequest:
    """The 400 for a required parameter that is absent (``param`` is its path).

    ``alternative``: a parameter that may stand in its place.
    """
    either = f" (or '{alternative}')" if alternative else ""
    return InvalidRequest(
        f"Missing required parameter: '{param}'{either}.",
        param=param,
        code="missing_required_parameter",
    )


def body_too_large(limit: int, size: int | None = None) -> RequestTooLarge:
    """The 413 for a request body over ``limit`` bytes (``size``: when it is known)."""
    if size is None:
        return RequestTooLarge(f"The request body is over the limit of {limit} bytes.")
    return RequestTooLarge(f"The request body is {size} bytes; the limit is {limit} bytes.")


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"

# How each server says that a request does not fit the model's context (lower-cased
# substrings of the message). vLLM: "This model's maximum context length is 4096
# tokens. However, you requested ..." and "... is longer than the maximum model length
# of ..."; SGLang: "The input (5000 tokens) is longer than the model's context length
# (4096 tokens)." and "Requested token count exceeds the model's maximum context
# length"; llama.cpp: "the request exceeds the available context size" (type
# exceed_context_size_error); Ollama: "the input length exceeds the context length"
# and "prompt too long; exceeded max context length".
CONTEXT_OVERFLOW_WORDS = (
    "maximum context length",
    "maximum model length",
    "model's context length",
    "exceeds the available context size",
    "exceed_context_size",
    "exceeds the context length",
    "exceeded max context length",
    "context_length_exceeded",
    "context window",
)


# How each server says that its model cannot take an input of this kind (lower-cased
# substrings): llama.cpp without a multimodal projector answers 500 "image input is
# not supported - hint: ..."; vLLM "... is not a multimodal model" / "does not support
# multimodal inputs"; Ollama "this model is missing data required for image input".
INPUT_NOT_SUPPORTED_WORDS = (
    "image input is not supported",
    "is not a multimodal model",
    "does not support multimodal",
    "does not support image",
    "missing data required for image input",
)


def is_input_not_supported(message: str) -> bool:
    text = message.lower()
    return any(w in text for w in INPUT_NOT_SUPPORTED_WORDS)


def is_context_overflow(message: str, code: str | None = None) -> bool:
    """Whether an upstream error (its message, its type or code) is a context overflow."""
    text = message.lower() if code is None else f"{message} {code}".lower()
    return any(w in text for w in CONTEXT_OVERFLOW_WORDS)


def seconds(value: bytes | None) -> float | None:
    """A Retry-After value in seconds (the delay form; a date is not read)."""
    if not value:
        return None
    try:
        wait = float(value)
    except ValueError:
        return None
    return wait if 0 <= wait < 86400 else None


def upstream_error_from_body(
    status: int, body: bytes, retry_after: bytes | None = None
) -> UpstreamError:
    """Normalise an upstream error answer (vLLM, SGLang, llama.cpp, Ollama, TGI shapes).

    A context overflow is the client's fault whatever the status the server gave it
    (400 ``context_length_exceeded``), and so is an input its model cannot take (400
    ``unsupported_input``, naming ``input``); 429 is the client's rate limit, 503 a
    full upstream (both keep the upstream's Retry-After). Every answer is marked
    ``answered``: the server is alive.
    """
    exc = _upstream_error(status, body, retry_after)
    exc.answered = True
    return exc


def _upstream_error(status: int, body: bytes, retry_after: bytes | None) -> UpstreamError:
    message, etype, param, code = _parse_error_body(body)
    if not message:
        message = f"The upstream server answered HTTP {status}."
    if is_context_overflow(message, f"{etype} {code}"):
        return ContextLengthExceeded(message)
    if is_input_not_supported(message):
        return InputNotSupported(message)
    if status == 429:
        return UpstreamRateLimited(message, seconds(retry_after))
    if 400 <= status < 500:
        return UpstreamRejected(status, message, type=etype, param=param, code=code)
    if status == 503:
        return UpstreamBusy(
            f"The upstream server is overloaded (HTTP 503): {message}", wait=seconds(retry_after)
        )
    return UpstreamUnavailable(f"The upstream server failed (HTTP {status}): {message}")


def _parse_error_body(body: bytes) -> tuple[str, str | None, str | None, str | None]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip(), None, None, None
    if not isinstance(doc, dict):
        return str(doc)[:500], None, None, None
    err = doc.get("error", doc)
    if isinstance(err, str):  # Ollama {"error": "..."}, TGI {"error": "...", "error_type": ...}
        etype = doc.get("error_type")
        return err, etype if isinstance(etype, str) else None, None, None
    if not isinstance(err, dict):
        return str(err)[:500], None, None, None
    message = err.get("message") or err.get("detail") or ""
    etype, param, code = err.get("type"), err.get("param"), err.get("code")
    return (
        str(message),
        etype if isinstance(etype, str) else None,
        param if isinstance(param, str) else None,
        # (OpenAI's code is a string or null; llama.cpp puts the HTTP status there, a
        # number, which says nothing the status does not)
        code if isinstance(code, str) and code else None,
    )
