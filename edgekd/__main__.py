"""``python -m edgekd`` runs the CLI."""

import sys

from edgekd.cli import main

if __name__ == "__main__":
    sys.exit(main())
