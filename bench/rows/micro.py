"""The ``micro`` row of bench/run.py: bench/micro_transcoder.py as a subprocess.

Solo: it runs once, after the load rows, with ``--quick`` when run.py has it and the
script takes it, bounded by ``--micro-timeout``. Its output is printed and kept under
``micro`` in the JSON.
"""

from __future__ import annotations

import subprocess
import sys

from rows.base import BENCH, Row


class Micro(Row):
    name = "micro"
    solo = True

    def run(self, rep: int) -> None:
        b, a = self.bench, self.bench.args
        script = BENCH / "micro_transcoder.py"
        if not script.exists():
            b.res.notes.append("micro: bench/micro_transcoder.py not present, skipped")
            return
        cmd = [sys.executable, str(script)]
        helptext = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
        if a.quick and "--quick" in helptext.stdout:
            cmd.append("--quick")
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.micro_timeout)
        except subprocess.TimeoutExpired:
            b.res.notes.append(f"micro: timed out after {a.micro_timeout}s")
            return
        print("\n== micro_transcoder ==\n" + out.stdout + out.stderr[-2000:], flush=True)
        b.res.extra["micro"] = {"returncode": out.returncode, "output": out.stdout[-20000:]}
