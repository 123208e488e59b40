"""``serve --workers N``: N worker processes on one port, under a small supervisor.

The supervisor forks the workers (they share the port with SO_REUSEPORT, or the
one socket systemd passed in), then only watches them, in a plain ``selectors``
loop without asyncio:

* A worker that exits unasked (a crash, SIGKILL) is started again after a
  back-off (``limits.RESTART_BACKOFF``, doubled per quick failure up to
  ``RESTART_BACKOFF_MAX``; reset once a worker ran ``RESTART_STABLE`` s). The
  other workers keep answering meanwhile.
* Each worker speaks systemd's notify protocol (``ops.notify``) to a datagram
  socket of the supervisor's, one per worker: the supervisor tells systemd
  ``READY=1`` once every worker is ready, sends ``WATCHDOG=1`` itself while at
  least one worker serves (ready, its own watchdog fresh: a supervisor whose
  workers all hang or crash-loop is restarted by systemd, not kept alive by its
  own loop), sums the workers' ``STATUS=`` (requests in flight), and kills
  (SIGKILL) and replaces a worker whose own ``WATCHDOG=1`` stopped (its loop is
  stuck).
* A worker dies with its supervisor (Linux: ``PR_SET_PDEATHSIG``, SIGTERM: it
  drains and exits), even one killed with SIGKILL, so no worker serves on with
  an old config; a SIGHUP that comes while a worker starts is ignored by it
  until its loop handles reloads.
* SIGTERM/SIGINT: ``STOPPING=1``, forwarded to every worker (each drains, see
  ``ops.lifecycle``); no restarts; exit 0 once all exited 0.
* SIGHUP: the config is re-read (a bad file is refused, the old one kept for
  workers started later) and the signal forwarded: each worker reloads.
* Metrics: the workers write to ``PROMETHEUS_MULTIPROC_DIR`` (the command line
  set it before anything imported the client library); a worker that dies is
  marked dead there, so its live gauges go while its counters stay.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from gateway.config import Config, ConfigError
from gateway.limits import (
    RESTART_BACKOFF,
    RESTART_BACKOFF_MAX,
    RESTART_STABLE,
    WORKER_WATCHDOG,
)
from gateway.ops.notify import Notifier, listen_fds, notify_address, watchdog_interval
from gateway.stores import SHARED_STORE_ENV

log = logging.getLogger("gateway")

IN_FLIGHT = re.compile(r"(\d+) requests? in flight")
HOOKED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with(parent: int) -> None:
    """Have this process get SIGTERM when ``parent`` (the supervisor) dies, whatever
    kills it (Linux; elsewhere nothing), and exit now if it died already."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)  # (it died before the prctl: the signal would never come)


class Slot:
    """One worker's place: its notify socket and the process now in it."""

    def __init__(self, index: int, path: str) -> None:
        self.index = index
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.pid = 0
        self.started = 0.0
        self.ready = False
        self.ever_ready = False
        self.beat = 0.0
        self.in_flight = 0
        self.failures = 0
        self.due = 0.0  # when to start it again (0: not waiting)


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        env: Mapping[str, str],
        *,
        keys_text: str | None,
        reread: Any = None,
        metrics_dir: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.env = env
        self.keys_text = keys_text
        self.reread = reread
        self.metrics_dir = metrics_dir
        self.workers = cfg.workers
        self.notifier = Notifier(notify_address(env))
        self.watchdog = watchdog_interval(env, os.getpid())
        self.worker_watchdog = self.watchdog or WORKER_WATCHDOG
        fds = listen_fds(env, os.getpid())
        self.listen_fd = fds[0] if fds else None
        self.stopping = False
        self.signals: list[int] = []
        self.status = 0
        self.told_ready = False
        self.slots: list[Slot] = []
        self.by_pid: dict[int, Slot] = {}
        self.shared_store = ""  # the database the workers share (run() names it)

    # ---- the loop --------------------------------------------------------------------

    def run(self) -> int:
        # The workers' notify sockets and shared store: systemd's RuntimeDirectory= if set.
        tmp = tempfile.mkdtemp(prefix="gateway-workers-", dir=self.env.get("RUNTIME_DIRECTORY"))
        if self.cfg.idempotency.store == "memory":  # (memory cannot be shared: SQLite)
            self.shared_store = os.path.join(tmp, "store.db")
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        for sig in HOOKED:
            signal.signal(sig, self._on_signal)
        sel = selectors.DefaultSelector()
        sel.register(wake_r, selectors.EVENT_READ, None)
        try:
            for i in range(self.workers):
                slot = Slot(i, os.path.join(tmp, f"notify-{i}"))
                self.slots.append(slot)
                sel.register(slot.sock, selectors.EVENT_READ, slot)
                self._start(slot)
            last_beat = 0.0
            while True:
                now = time.monotonic()
                for key, _ in sel.select(self._timeout(now)):
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            while wake_r.recv(64):
                                pass
                    else:
                        self._read(key.data)
                self._handle_signals()
                self._reap()
                now = time.monotonic()
                if self.stopping:
                    if not self.by_pid:
                        return self.status
                    continue
                self._check(now)
                if self.watchdog and now - last_beat >= self.watchdog / 2 and self.serving(now):
                    last_beat = now
                    self.notifier.send("WATCHDOG=1")
                self._report()
        finally:
            for sig in HOOKED:
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(old_wakeup)
            for slot in self.slots:
                slot.sock.close()
            sel.close()
            wake_r.close()
            wake_w.close()
            self.notifier.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def serving(self, now: float) -> bool:
        """At least one worker serves: ready, and its own watchdog is fresh."""
        return any(
            s.pid in self.by_pid and s.ready and now - s.beat <= self.worker_watchdog
            for s in self.slots
        )

    def _timeout(self, now: float) -> float:
        waits = [1.0]
        if self.watchdog:
            waits.append(self.watchdog / 4)
        waits += [max(0.0, s.due - now) for s in self.slots if s.due]
        return min(waits)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                self.stopping = True
                log.info("supervisor: stopping %d worker(s)", len(self.by_pid))
                self.notifier.stopping("draining")
                self._forward(signal.SIGTERM)
            elif signum == signal.SIGHUP and not self.stopping and self.reread is not None:
                self._reload()
                self._forward(signal.SIGHUP)  # (without a config file, nothing to reload)

    def _forward(self, signum: int) -> None:
        for pid in list(self.by_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _reload(self) -> None:
        if self.reread is None:
            return
        try:
            self.cfg, self.keys_text = self.reread()
        except (ConfigError, ValueError) as exc:
            log.error("supervisor: reload refused, the running config goes on: %s", exc)

    # ---- workers -----------------------------------------------------------------------

    def _start(self, slot: Slot) -> None:
        slot.due = 0.0
        slot.ready = False
        slot.beat = 0.0
        slot.in_flight = 0
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._worker(slot, parent)  # (never returns)
        slot.pid = pid
        slot.started = time.monotonic()
        self.by_pid[pid] = slot

    def _worker(self, slot: Slot, parent: int) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in HOOKED:
                signal.signal(sig, signal.SIG_DFL)
            if self.reread is not None:  # (a reload during the start: ignored till served)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            die_with(parent)
            from gateway.ops.lifecycle import run

            env = {k: v for k, v in self.env.items() if not k.startswith(("LISTEN_", "WATCHDOG_"))}
            env["NOTIFY_SOCKET"] = slot.path
            if self.shared_store:
                env[SHARED_STORE_ENV] = self.shared_store
            env["WATCHDOG_USEC"] = str(int(self.worker_watchdog * 1e6))
            env["WATCHDOG_PID"] = str(os.getpid())
            run(
                self.cfg,
                env,
                reuse_port=True,
                keys_text=self.keys_text,
                listen_fd=self.listen_fd,
                reread=self.reread,
            )
            code = 0
        except BaseException:
            log.exception("worker failed")
        finally:
            logging.shutdown()
            os._exit(code)

    def _reap(self) -> None:
        while self.by_pid:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.by_pid.pop(pid, None)
            if slot is None:
                continue
            code = os.waitstatus_to_exitcode(wstatus)
            if self.metrics_dir is not None:
                from gateway.ops.metrics import worker_gone

                worker_gone(pid, self.metrics_dir)
            if self.stopping:
                if code != 0:
                    self.status = 1
                continue
            lived = time.monotonic() - slot.started
            slot.failures = 0 if lived >= RESTART_STABLE else slot.failures + 1
            delay = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF * 2 ** max(0, slot.failures - 1))
            how = f"signal {-code}" if code < 0 else f"status {code}"
            log.warning(
                "supervisor: worker %d exited (%s) after %.1f s; starting another in %.1f s",
                pid,
                how,
                lived,
                delay,
            )
            slot.due = time.monotonic() + delay

    def _check(self, now: float) -> None:
        for slot in self.slots:
            if slot.due and now >= slot.due:
                self._start(slot)
            elif slot.pid in self.by_pid and slot.ready and now - slot.beat > self.worker_watchdog:
                log.error(
                    "supervisor: worker %d sent no watchdog for %.1f s (stuck): killing it",
                    slot.pid,
                    now - slot.beat,
                )
                slot.ready = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)

    def _read(self, slot: Slot) -> None:
        while True:
            try:
                data = slot.sock.recv(4096)
            except BlockingIOError:
                return
            now = time.monotonic()
            for line in data.decode("utf-8", "replace").splitlines():
                if line == "READY=1":
                    slot.ready = slot.ever_ready = True
                    slot.beat = now
                elif line == "WATCHDOG=1":
                    slot.beat = now
                elif line.startswith("STATUS="):
                    m = IN_FLIGHT.search(line)
                    if m:
                        slot.in_flight = int(m.group(1))

    def _report(self) -> None:
        live = [s for s in self.slots if s.pid in self.by_pid and s.ready]
        status = (
            f"{len(live)} of {self.workers} workers ready; "
            f"{sum(s.in_flight for s in live)} requests in flight"
        )
        if not self.told_ready and all(s.ever_ready for s in self.slots):
            self.told_ready = True
            log.info("supervisor: %d workers ready", self.workers)
            self.notifier.ready(status)
        elif self.told_ready:
            self.notifier.status(status)
