"""Running the `forewarn` command line in tests, as a subprocess with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys

# Variables that would make the command line pick another config or resolve a secret.
CONFIG_ENV = ("FOREWARN_CONFIG", "CONFIGURATION_DIRECTORY", "FOREWARN_TEST_UNSET_PASSWORD")


def forewarn(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command line; `env` adds variables. Whatever happens, no traceback."""
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        env=clean | env,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, f"forewarn {' '.join(args)} crashed:\n{output}"
    return done
