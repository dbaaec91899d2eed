"""``python -m agentbus`` is the ``agentbus`` command."""

import sys

from .cli import main

sys.exit(main())
