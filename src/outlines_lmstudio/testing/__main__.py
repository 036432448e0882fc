"""``python -m outlines_lmstudio.testing``: the same as ``outlines-lmstudio emulator``."""

import sys

from outlines_lmstudio.testing._command import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
