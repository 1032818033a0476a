import sys

from .run import main

sys.exit(main(prog="python -m differentiable_market.study"))
