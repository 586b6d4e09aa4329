"""``python -m signfer`` runs the command line, like the ``signfer`` script."""

import sys

from signfer.cli import main

sys.exit(main())
