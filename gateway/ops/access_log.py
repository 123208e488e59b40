"""Logs: one access-log line per finished API request, and the format of the others.

The access log (logger ``gateway.access``, level INFO) has one line per request
when its answer ends (a stream at its last event), never per chunk: request id,
endpoint, model, deployment and replica, status, outcome (``completed``,
``incomplete``, ``failed``, ``client_gone``), duration, time to first token,
events and token counts, the error code if one ended it, and the tenant (the
short hash of the client's key, never the key). Never prompt text, never a key.

Format ``json`` (one object per line, for journald and log shippers), ``text``
(for a person at a terminal), or ``auto``: text when stderr is a terminal, JSON
otherwise. Every other log line (startup, warnings) takes the same format
(``setup``). Lines leave in one write every ``limits.ACCESS_LOG_FLUSH`` s at
most, so a busy process makes one write for many requests, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import IO, Any

import orjson

from gateway.api.calls import Call
from gateway.config import Deployment
from gateway.errors import GatewayError
from gateway.limits import ACCESS_LOG_FLUSH
from gateway.upstream.routing import Route

ACCESS = "gateway.access"
HEAD_JSON = f'"level":"info","logger":"{ACCESS}","msg":"request"'
NULL_NAMES = ("null", "null")


def _json_or_null(text: str) -> str:
    return orjson.dumps(text).decode() if text else "null"


_stamp_second = -1
_stamp_prefix = ""


def timestamp(now: float) -> str:
    """UTC ISO 8601 with milliseconds; the seconds part is formatted once per second."""
    global _stamp_second, _stamp_prefix
    second = int(now)
    if second != _stamp_second:
        _stamp_second = second
        _stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_stamp_prefix}.{int((now - second) * 1000):03d}Z"


def resolve_format(fmt: str, stream: IO[Any]) -> str:
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return fmt


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: ts, level, logger, msg (and exc if any)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{timestamp(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str, fmt: str, stream: IO[str] | None = None) -> str:
    """Configure the root logger: ``level`` (a name), ``fmt`` (auto/json/text) on
    ``stream`` (stderr). Returns the resolved format."""
    stream = stream or sys.stderr
    resolved = resolve_format(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if resolved == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return resolved


def replica_name(route: Route | None) -> tuple[str, str]:
    """(deployment, replica) labels of a route, both from the config (bounded): the
    deployment's name (its first model id, or its first URL), and its replica's base
    URL when it has one replica ("" when it has several: then the call's own
    ``replica``, set when a replica answered or failed it, names it)."""
    if route is None:
        return "", ""
    replicas = route.replicas.replicas
    one = replicas[0].base if len(replicas) == 1 else ""
    return deployment_name(route.dep), one


def deployment_name(dep: Deployment) -> str:
    return dep.models[0] if dep.models else dep.urls[0]


def error_code(error: Exception) -> str:
    """The error a log line names: its OpenAI code, or the exception's type."""
    code = error.code if isinstance(error, GatewayError) else None
    return code or type(error).__name__


def fields(call: Call, now: float) -> dict[str, Any]:
    """What the access log says of a finished request (the text lines; the JSON
    ones, ``AccessLog._json``, say the same, formatted faster)."""
    dep, replica = replica_name(call.route)
    replica = call.replica or replica
    ttft = call.ttft
    doc: dict[str, Any] = {
        "request_id": call.rid,
        "endpoint": call.endpoint,
        "model": call.model or None,
        "deployment": dep or None,
        "replica": replica or None,
        "status": call.status,
        "outcome": call.outcome,
        "duration_s": round(now - call.started, 6),
        "ttft_s": None if ttft is None else round(ttft, 6),
    }
    usage = call.usage
    if usage is not None:
        doc["input_tokens"] = usage["input_tokens"]
        doc["output_tokens"] = usage["output_tokens"]
        details = usage.get("output_tokens_details")
        doc["reasoning_tokens"] = (details.get("reasoning_tokens") or 0) if details else 0
    if call.events:
        doc["events"] = call.events
    if call.error is not None:
        doc["error"] = error_code(call.error)
    if call.replayed:
        doc["replayed"] = True
    if call.tenant:
        doc["tenant"] = call.tenant
    return doc


class AccessLog:
    """Writes the access-log lines to ``out`` (a binary stream: stderr's buffer)."""

    def __init__(self, out: IO[bytes], fmt: str = "json") -> None:
        self.out = out
        self.json = fmt == "json"
        self.pending: list[bytes] = []
        self.scheduled = False
        self.names: dict[Route, tuple[str, str]] = {}  # route -> deployment, replica (JSON)
        self.models: dict[str, str] = {}  # model id -> JSON

    def write(self, call: Call, now: float) -> None:
        wall = time.time()
        line = self._json(call, now, wall) if self.json else self._text(fields(call, now), wall)
        self.pending.append(line)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_later(ACCESS_LOG_FLUSH, self.flush)

    def _json(self, call: Call, now: float, wall: float) -> bytes:
        """The JSON line, as ``fields`` says, formatted directly: the names of a route
        and a model are JSON-encoded once and kept; the rest are numbers, our own
        constants, or the request id (printable ASCII: quoted as it is unless it
        holds a quote or a backslash)."""
        route = call.route
        if route is None:
            names = NULL_NAMES
        elif (known := self.names.get(route)) is not None:
            names = known
        else:  # (once per route: a route lives as long as its router)
            dep, replica = replica_name(route)
            names = self.names[route] = (_json_or_null(dep), _json_or_null(replica))
        if call.replica:  # (one of several: which one is the call's)
            replica_json = self.models.get(call.replica)
            if replica_json is None:
                replica_json = self.models[call.replica] = _json_or_null(call.replica)
            names = (names[0], replica_json)
        model = call.model
        model_json = self.models.get(model)
        if model_json is None:
            model_json = self.models[model] = _json_or_null(model)
        rid = call.rid
        rid_json = orjson.dumps(rid).decode() if '"' in rid or "\\" in rid else f'"{rid}"'
        ttft = call.ttft
        tail = ""
        usage = call.usage
        if usage is not None:
            details = usage.get("output_tokens_details")
            reasoning = (details.get("reasoning_tokens") or 0) if details else 0
            tail = (
                f',"input_tokens":{usage["input_tokens"]:d},'
                f'"output_tokens":{usage["output_tokens"]:d},"reasoning_tokens":{reasoning:d}'
            )
        if call.events:
            tail += f',"events":{call.events:d}'
        if call.error is not None:
            tail += f',"error":{orjson.dumps(error_code(call.error)).decode()}'
        if call.replayed:
            tail += ',"replayed":true'
        if call.tenant:  # (12 hex digits: quoted as it is)
            tail += f',"tenant":"{call.tenant}"'
        return (
            f'{{"ts":"{timestamp(wall)}",{HEAD_JSON},"request_id":{rid_json},'
            f'"endpoint":"{call.endpoint}","model":{model_json},"deployment":{names[0]},'
            f'"replica":{names[1]},"status":{call.status:d},"outcome":"{call.outcome}",'
            f'"duration_s":{now - call.started:.6f},'
            f'"ttft_s":{"null" if ttft is None else f"{ttft:.6f}"}{tail}}}\n'
        ).encode()

    @staticmethod
    def _text(doc: dict[str, Any], wall: float) -> bytes:
        rest = " ".join(
            f"{k}={v}"
            for k, v in doc.items()
            if k not in ("request_id", "endpoint") and v is not None
        )
        return (
            f"{timestamp(wall)} INFO access {doc['request_id']} {doc['endpoint']} {rest}\n".encode()
        )

    def flush(self) -> None:
        """Write the lines waiting (also at the gateway's end: ``open_gateway``)."""
        self.scheduled = False
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending.clear()
        try:
            self.out.write(data)
            self.out.flush()
        except (OSError, ValueError):
            pass  # (stderr closed: the request was answered; nothing to do)


def access_enabled() -> bool:
    return logging.getLogger(ACCESS).isEnabledFor(logging.INFO)
