"""Makes the synth tests' helper module (`synth_checks`) importable in any pytest import mode."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
