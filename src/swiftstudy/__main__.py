"""``python -m swiftstudy`` runs the command line."""

import sys

from swiftstudy.cli.main import main

sys.exit(main())
