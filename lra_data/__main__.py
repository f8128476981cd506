"""``python -m lra_data``: see :mod:`lra_data.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
