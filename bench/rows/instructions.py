"""The ``instructions`` row of bench/run.py: bench/instructions.py as a subprocess.

Solo: it runs once, after the load rows (callgrind counts of the identity row's
variants; ``--requests 100`` with ``--quick``), bounded at 900 s. Its output is printed
and kept under ``instructions`` in the JSON.
"""

from __future__ import annotations

import subprocess
import sys

from rows.base import BENCH, Row


class Instructions(Row):
    name = "instructions"
    solo = True

    def run(self, rep: int) -> None:
        b = self.bench
        cmd = [sys.executable, str(BENCH / "instructions.py")]
        if b.args.quick:
            cmd += ["--requests", "100"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            b.res.notes.append("instructions: timed out after 900s")
            return
        print("\n== instructions ==\n" + out.stdout + out.stderr[-2000:], flush=True)
        b.res.extra["instructions"] = {"returncode": out.returncode, "output": out.stdout}
