"""``python -m outlines_lmstudio``: the ``outlines-lmstudio`` command."""

import sys

from outlines_lmstudio.cli import main

sys.exit(main())
