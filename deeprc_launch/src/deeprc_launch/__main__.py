"""``python -m deeprc_launch`` is ``deeprc-launch``."""

import sys

from .cli import main

sys.exit(main())
