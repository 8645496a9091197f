"""``python -m daskem.cli``: the ``daskem`` command."""

import sys

from daskem.cli import main

# Guarded: a LocalCluster's spawned worker processes import the parent's main module.
if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
