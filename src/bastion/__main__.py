"""``python -m bastion`` runs the CLI."""

import sys

from bastion.cli.main import main

sys.exit(main())
