"""``python -m outlines_lmstudio``: the ``outlines-lmstudio`` command."""

import sys

from outlines_lmstudio.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
