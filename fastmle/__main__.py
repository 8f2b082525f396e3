"""``python -m fastmle``: the ``fastmle`` command (``fit``, ``demo`` (the default), ``bench``)."""

import sys

from .cli import main

sys.exit(main())
