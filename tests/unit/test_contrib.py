"""contrib/gateway.service and gateway.socket: systemd accepts them, and they say
what the issue asks (notify, check-config before start, watchdog, hardening)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (CONTRIB / "gateway.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, val = line.partition("=")
            out.setdefault(key, []).append(val)
    return out


def test_the_unit_says_what_operations_need() -> None:
    u = unit()
    assert u["Type"] == ["notify"] and u["Restart"] == ["on-failure"]
    assert "check-config --config" in u["ExecStartPre"][0]
    # The keys file comes as a credential (no world-readable file for DynamicUser), and
    # check-config reads the same one the service will.
    assert u["LoadCredential"] == ["api-keys:/etc/gateway/keys"]
    assert "--api-keys-file %d/api-keys" in u["ExecStartPre"][0]
    assert "--api-keys-file %d/api-keys" in u["ExecStart"][0]
    assert int(u["WatchdogSec"][0]) > 0 and int(u["LimitNOFILE"][0]) >= 65536
    assert u["CapabilityBoundingSet"] == [""]
    for key, val in [("DynamicUser", "yes"), ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes")]:
        assert u[key] == [val]
    assert u["ProtectSystem"] == ["strict"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is absent")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    # verify wants ExecStart's program to exist: point it at this venv's python.
    text = (CONTRIB / "gateway.service").read_text()
    (tmp_path / "gateway.service").write_text(
        text.replace("/opt/gateway/.venv/bin/python", sys.executable)
    )
    shutil.copy(CONTRIB / "gateway.socket", tmp_path / "gateway.socket")
    files = [str(tmp_path / "gateway.service"), str(tmp_path / "gateway.socket")]
    done = subprocess.run(["systemd-analyze", "verify", *files], capture_output=True, text=True)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "gateway." not in said, said  # (a warning names the file: an unknown key, say)


def test_check_config_takes_config_flag(tmp_path: Path) -> None:
    good = tmp_path / "g.toml"
    good.write_text('[[deployment]]\nupstream = "http://127.0.0.1:9/v1"\nmodels = ["m"]\n')
    run = [sys.executable, "-m", "gateway", "check-config"]
    done = subprocess.run([*run, "--config", str(good)], capture_output=True, text=True)
    assert done.returncode == 0 and "OK (1 deployment(s))" in done.stdout
    bad = tmp_path / "b.toml"
    bad.write_text('[ops]\ndrain-timeout = -1\n[[deployment]]\nupstream = "http://x/v1"\n')
    done = subprocess.run([*run, "--config", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2 and "drain-timeout" in done.stderr
