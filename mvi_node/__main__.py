"""``python -m mvi_node``: the same as the ``mvi-node`` command."""

import sys

from mvi_node.commands.main import main

sys.exit(main())
