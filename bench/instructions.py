"""Instructions per request, counted by callgrind: the identity row's variants, exactly.

Wall-clock figures on a shared 2-core machine swing by 10-30 % between runs; an
instruction count does not (the same binary and inputs give the same count, whatever
else the machine does). Each variant is one gateway process under
``valgrind --tool=callgrind`` in front of the fake upstream: ``--warm`` sequential
keep-alive ``POST /v1/responses`` first, then the counters are zeroed, ``--requests``
more are sent, and the counters dumped; the figure is that dump's total over the
requests. Variants (as in bench/rows/identity.py):

- ``plain``: no request id, no key, no Idempotency-Key;
- ``ids``: a client ``X-Request-Id`` on each request;
- ``ids+auth``: and a client API key (``--api-keys-file``);
- ``ids+auth+idem``: and a fresh ``Idempotency-Key`` (the in-memory store);
- ``ids+auth+idem, full store``: the same with ``[idempotency] max-entries`` small
  enough that the warm-up fills it, so every measured request evicts.

With ``--conns N`` (N > 1) the load is ``wrk -cN`` instead, for ``--seconds`` after
as long a warm-up, and the figure is the dump's total over wrk's count: what
concurrency adds (requests in flight together: the garbage collector's work, more
than one answer a read).

What memory does beyond instructions (caches, page faults while a store grows) is
not in these figures: the identity row's wall-clock ratios hold it.
Usage: .venv/bin/python bench/instructions.py [--requests N] [--warm N] [--jobs J]
       [--conns N --seconds S] [--only VARIANT,...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # (harness, rows.identity)

HOST = "127.0.0.1"
KEY = "sk-bench-instructions-0123456789"
BODY = b'{"model":"demo","input":"Say hello"}'
FULL_ENTRIES = 200
# name -> (X-Request-Id, Authorization, Idempotency-Key, a store the warm-up fills)
VARIANTS = {
    "plain": (False, False, False, False),
    "ids": (True, False, False, False),
    "ids+auth": (True, True, False, False),
    "ids+auth+idem": (True, True, True, False),
    "ids+auth+idem, full store": (True, True, True, True),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening")
        try:
            socket.create_connection((HOST, port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listened on {port} within {timeout:.0f}s")


class Client:
    """Sequential requests on one keep-alive connection; each answer read whole."""

    def __init__(self, port: int, flags: tuple[bool, bool, bool, bool]) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.flags = flags
        self.run = uuid.uuid4().hex[:12]  # every key fresh: no request is a replay

    def send(self, n: int) -> None:
        ids, auth, idem, _ = self.flags
        lines = [b"POST /v1/responses HTTP/1.1", b"Host: bench", b"Content-Type: application/json"]
        lines.append(b"Content-Length: %d" % len(BODY))
        if ids:
            lines.append(f"X-Request-Id: bench-{self.run}-{n}".encode())
        if auth:
            lines.append(f"Authorization: Bearer {KEY}".encode())
        if idem:
            lines.append(f"Idempotency-Key: idem-{self.run}-{n}".encode())
        self.sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + BODY)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.recv()
        head, rest = data.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"request {n}: {head[:120]!r}")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if match is None:
            raise RuntimeError(f"request {n}: no Content-Length")
        while len(rest) < int(match.group(1)):
            rest += self.recv()

    def recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("the gateway closed the connection")
        return chunk


def wrk_load(port: int, name: str, work: Path, conns: int, seconds: float) -> float:
    """One wrk run of the variant's requests (each with its own keys); requests done."""
    import harness
    from rows.identity import identity_script

    ids, auth, idem, _ = VARIANTS[name]
    if ids:
        script = identity_script(BODY, work, KEY if auth else None)
        if not idem:
            script.write_text(script.read_text().replace('headers["Idempotency-Key"]', "--"))
    else:
        script = work / "plain.lua"
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = [==[{BODY.decode()}]==]\n'
            'wrk.headers["Content-Type"] = "application/json"\n' + harness.WRK_DONE
        )
    m = harness.run_wrk([], port, "/v1/responses", script, conns, seconds)
    if m["errors"]:
        raise RuntimeError(f"{name}: {m['errors']:.0f} wrk errors or non-2xx answers")
    return float(m["requests"])


def measure(
    name: str, upstream: str, work: Path, warm: int, requests: int, conns: int, seconds: float
) -> float:
    """Instructions per request of one variant (its own gateway under callgrind)."""
    flags = VARIANTS[name]
    tag = re.sub(r"[^a-z]+", "-", name)
    port = free_port()
    args = ["--host", HOST, "--port", str(port), "--upstream", upstream, "--model", "demo"]
    if flags[3]:  # the same, from a config file that bounds the store
        from rows.identity import bounded_store

        args = bounded_store(work / f"{tag}.toml", port, upstream, FULL_ENTRIES)
        warm = max(warm, FULL_ENTRIES + 50)
    if flags[1]:
        keys = work / "keys.txt"
        keys.write_text(KEY + "\n")
        args += ["--api-keys-file", str(keys)]
    out = work / f"callgrind.{tag}.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, "-m", "gateway", "serve", *args]
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_port(port, proc)
        if conns > 1:
            wrk_load(port, name, work, conns, seconds)
            control(proc.pid, "-z")
            requests = int(wrk_load(port, name, work, conns, seconds))
            control(proc.pid, "-d", "measured")
        else:
            client = Client(port, flags)
            for n in range(warm):
                client.send(n)
            control(proc.pid, "-z")
            for n in range(warm, warm + requests):
                client.send(n)
            control(proc.pid, "-d", "measured")
            client.sock.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for dump in sorted(work.glob(f"callgrind.{tag}.out*")):
        text = dump.read_text(errors="replace")
        if "measured" not in text[:4000]:
            continue
        total = re.search(r"(?m)^(?:summary|totals):\s*(\d+)", text)
        if total:
            return int(total.group(1)) / requests
    raise RuntimeError(f"{name}: no measured dump in {work}")


def control(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=300, help="measured requests per variant")
    p.add_argument("--warm", type=int, default=100, help="requests before the count starts")
    p.add_argument("--jobs", type=int, default=2, help="variants measured at once")
    p.add_argument("--conns", type=int, default=1, help="1: sequential; more: wrk -cN")
    p.add_argument("--seconds", type=float, default=20.0, help="wrk run (with --conns)")
    p.add_argument("--only", default="", help="comma-separated variants (plain is always in)")
    a = p.parse_args(argv)
    # (split at commas not followed by a space: "ids+auth+idem, full store" is one name)
    chosen = filter(None, (n.strip() for n in re.split(r",(?! )", a.only)))
    only = {"plain", *chosen} if a.only else set(VARIANTS)
    if unknown := only - set(VARIANTS):
        p.error(f"unknown variants: {', '.join(sorted(unknown))} (of: {', '.join(VARIANTS)})")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("instructions: valgrind not found (apt-get install valgrind); skipped")
        return 0
    with tempfile.TemporaryDirectory(prefix="gw-callgrind-") as tmp:
        work = Path(tmp)
        up = free_port()
        demo = subprocess.Popen(
            [sys.executable, "-m", "gateway.demo", "--fixed", "--port", str(up)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(up, demo, 30)
            upstream = f"http://{HOST}:{up}/v1"
            with ThreadPoolExecutor(max(1, a.jobs)) as pool:
                futures = {
                    name: pool.submit(
                        measure, name, upstream, work, a.warm, a.requests, a.conns, a.seconds
                    )
                    for name in VARIANTS
                    if name in only
                }
                figures = {name: f.result() for name, f in futures.items()}
        finally:
            demo.terminate()
            demo.wait()
    plain = figures["plain"]
    how = f"wrk -c{a.conns}, {a.seconds:.0f} s" if a.conns > 1 else f"{a.requests} sequential"
    print(f"instructions per non-streaming POST /v1/responses ({how}, callgrind)")
    for name, value in figures.items():
        print(f"  {name:27s} {value / 1000:8.1f}k   {value / plain:5.3f}x of plain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
