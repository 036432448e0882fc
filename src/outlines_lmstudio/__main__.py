"""``python -m outlines_lmstudio``: the ``outlines-lmstudio`` command."""

import sys

from outlines_lmstudio.cli import main

if __name__ == "__main__":
    sys.exit(main())
