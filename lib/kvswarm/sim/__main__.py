"""`python -m kvswarm.sim`: run the simulated serving stack (same flags as `kvswarm sim`)."""

from __future__ import annotations

import sys

from kvswarm.sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
