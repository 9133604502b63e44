"""`python -m scadm`: the `scadm` command."""

import sys

from .cli import main

sys.exit(main())
