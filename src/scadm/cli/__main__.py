"""`python -m scadm.cli` (what `accelerate launch -m scadm.cli train ...` runs)."""

import sys

from .main import main

sys.exit(main())
