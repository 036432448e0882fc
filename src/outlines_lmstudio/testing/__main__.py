"""``python -m outlines_lmstudio.testing``: the same as ``outlines-lmstudio emulator``."""

import sys

from outlines_lmstudio.cli import main

if __name__ == "__main__":
    sys.exit(main(["emulator", *sys.argv[1:]]))
