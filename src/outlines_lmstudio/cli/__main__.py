"""``python -m outlines_lmstudio.cli``: the ``outlines-lmstudio`` command."""

import sys

from outlines_lmstudio.cli import main

__all__: list[str] = []

sys.exit(main())
