"""``python -m differentiable_market``: the same as the ``differentiable-market`` console script."""

import sys

from .cli import main

sys.exit(main())
