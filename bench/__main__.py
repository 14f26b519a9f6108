"""`python -m bench [--quick|--full] [--smoke] [--only P1,P3] [--workers N]`: P1-P6 in one run."""

from __future__ import annotations

import sys

from bench.suite import main

if __name__ == "__main__":
    sys.exit(main())
