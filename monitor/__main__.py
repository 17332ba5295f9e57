"""`python -m monitor` is the `forewarn` command."""

import sys

from monitor.cli import main

sys.exit(main())
