"""`python -m traffik`: the command line (`traffik.cli`)."""

from __future__ import annotations

import sys

from traffik.cli import main

sys.exit(main())
