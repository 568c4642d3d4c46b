"""`python -m dlc` is the same program as the `dlc` console script."""
from dlc.cli import main

raise SystemExit(main())
