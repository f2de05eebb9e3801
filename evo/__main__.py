"""`python -m evo ...`: the same as the `evo` console script."""
import sys

from evo.cli import main

sys.exit(main())
