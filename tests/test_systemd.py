"""The shipped unit passes `systemd-analyze verify` (with ExecStart pointed at this install)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from monitor.cli import EXIT_CONFIG

UNIT = Path(__file__).parent.parent / "systemd" / "forewarn.service"


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    forewarn = shutil.which("forewarn")
    if analyze is None or forewarn is None:
        pytest.skip("systemd-analyze or the installed forewarn command is missing")
    unit = tmp_path / "forewarn.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/forewarn", forewarn))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if "forewarn.service" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_unit_keeps_config_errors_from_restarting() -> None:
    text = UNIT.read_text()
    assert f"RestartPreventExitStatus={EXIT_CONFIG}" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "StateDirectory=forewarn" in text
