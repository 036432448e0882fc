"""``python -m outlines_lmstudio.cli``: the ``outlines-lmstudio`` command."""

import sys

from outlines_lmstudio.cli import main

sys.exit(main())
