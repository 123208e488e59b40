"""Plumbing for bench/run.py: processes, /proc accounting, wrk, one-off requests.

Everything here is blocking and loopback-only. Processes are started in their
own session so that a target and the workers it forks stop together.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


def start(name: str, cmd: list[str], log_dir: Path) -> Proc:
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def stop(proc: Proc) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.popen.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=5)
        except ProcessLookupError:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # forked workers can outlive their parent


def wait_ready(
    proc: Proc, port: int, timeout: float = 20.0, headers: dict[str, str] | None = None
) -> None:
    """Poll GET /v1/models until it answers 200; raise with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}: {proc.log_tail()}")
        try:
            status, _, _ = request(port, "GET", "/v1/models", None, 1.0, headers)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready after {timeout:.0f}s: {proc.log_tail()}")


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        sent = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers={**sent, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def count_events(raw: bytes) -> int:
    """SSE events in a body: blocks that end with a blank line and carry data."""
    return sum(1 for block in raw.replace(b"\r\n", b"\n").split(b"\n\n") if b"data:" in block)


# -- /proc accounting --------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode()
    return raw[raw.rindex(")") + 2 :].split()  # fields 3.. (state, ppid, ...)


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found.extend(kids)
        frontier = kids
    return found


def cpu_seconds(pid: int) -> float:
    """utime+stime of the tree, plus cutime+cstime (children already reaped)."""
    ticks = 0
    for p in tree(pid):
        try:
            f = _stat_fields(p)
        except (OSError, IndexError):
            continue
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def reaped_cpu_seconds() -> float:
    """CPU time of our own children that have exited (wrk runs), for load-core accounting."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except (OSError, IndexError):
            continue
    return total


# -- wrk -----------------------------------------------------------------------

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {\\"requests\\":%.0f,\\"duration_us\\":%.0f,\\"bytes\\":%.0f,\\"connect\\":%.0f,"
    .. "\\"read\\":%.0f,\\"write\\":%.0f,\\"status\\":%.0f,\\"timeout\\":%.0f,"
    .. "\\"p50_us\\":%.1f,\\"p90_us\\":%.1f,\\"p99_us\\":%.1f,\\"mean_us\\":%.1f}\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean))
end
"""


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        print("wrk not found: apt-get install -y wrk", flush=True)
        cmd = ["apt-get", "install", "-y", "wrk"]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, check=False)
            subprocess.run(cmd, capture_output=True, check=True)
        path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return path


def wrk_script(body: bytes, directory: Path) -> Path:
    text = body.decode()
    assert "]==]" not in text
    lua = (
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{text}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + WRK_DONE
    )
    fd, name = tempfile.mkstemp(suffix=".lua", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(lua)
    return Path(name)


def run_wrk(
    taskset: list[str], port: int, path: str, script: Path, conns: int, seconds: float
) -> dict[str, float]:
    """One wrk run; returns requests/s, latency percentiles (ms) and error counts."""
    cmd = [
        *taskset,
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        f"http://{HOST}:{port}{path}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    raw = json.loads(line[len("BENCH ") :])
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
        "non2xx": raw["status"],
    }


def cpu_around(pid: int, cmd: list[str]) -> tuple[float, dict[str, Any]]:
    """Run the client ``cmd``, which prints ``START``, ``END``, then one JSON line: the
    CPU seconds process ``pid`` (and its tree) spent between the two, and the JSON."""
    name = Path(cmd[cmd.index(sys.executable) + 1]).stem
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        lines = iter(p.stdout.readline, "")
        if next(lines, "").strip() != "START":
            raise RuntimeError(f"{name} did not start")
        cpu0 = cpu_seconds(pid)
        if next(lines, "").strip() != "END":
            raise RuntimeError(f"{name} did not finish")
        cpu = cpu_seconds(pid) - cpu0
        out: dict[str, Any] = json.loads(next(lines, "{}"))
    return cpu, out


def fixed_rate(
    taskset: list[str],
    pid: int,
    port: int,
    path: str,
    body: bytes,
    rate: float,
    seconds: float,
) -> tuple[float, dict[str, Any]]:
    """``rate_client.py`` at a fixed rate against port: the CPU seconds process ``pid``
    (and its tree) spent during the run, and the client's counts (ok, failed, dropped,
    events). Raises when the client fails or not one request succeeded."""
    client = Path(__file__).resolve().parent / "rate_client.py"
    cmd = [*taskset, sys.executable, str(client), "--port", str(port), "--path", path]
    cmd += ["--body", body.decode(), "--rate", str(rate), "--duration", str(seconds)]
    cpu, out = cpu_around(pid, cmd)
    if not out.get("ok"):
        raise RuntimeError(f"no successful requests at {rate}/s on {path}: {out}")
    return cpu, out


def machine() -> dict[str, object]:
    model, virtual = "", False
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                virtual = virtual or " hypervisor" in line
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return {"nproc": os.cpu_count(), "cpu": model, "virtual_machine": virtual, "wrk": wrk_v.strip()}
