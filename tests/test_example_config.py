"""The documented example config.toml: valid, and `forewarn check` runs every kind in it.

The example names hosts a reader would have (intranet.example.com, TEST-NET addresses); the
test points them at 127.0.0.1 so that nothing leaves this machine, and checks that every
probe kind configured in the example reports.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "config.toml"
REMOTE = re.compile(r"\b(?:[a-z0-9-]+\.)+example\.(?:com|org)\b|\b192\.0\.2\.\d+\b")


def test_check_runs_every_kind_of_the_example(tmp_path: Path) -> None:
    local = REMOTE.sub("127.0.0.1", EXAMPLE.read_text())
    assert REMOTE.search(local) is None
    config = tmp_path / "config.toml"
    config.write_text(local)
    kinds = {p["kind"] for p in tomllib.loads(local)["probe"]}
    env = dict(
        os.environ,
        FOREWARN_SMTP_PASSWORD="unused-by-check",
        FOREWARN_CHAT_URL="json://127.0.0.1:9/unused-by-check",
    )
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "check", "-c", str(config), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    rows = json.loads(done.stdout)
    reported = {r["labels"]["kind"] for r in rows if r["metric"] == "probe_up"}
    assert reported == kinds
    # Every probe ran to the end (its own errors, such as a refused port, are samples).
    hung = [r for r in rows if r["metric"] == "probe_up" and "timed out" in (r["error"] or "")]
    assert not hung, hung
