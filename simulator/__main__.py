"""``python -m simulator`` is the ``layerbench`` command."""

import sys

from .cli import main

sys.exit(main())
