"""``python -m pyerl_node`` runs the CLI."""

import sys

from pyerl_node.cli import main

sys.exit(main())
