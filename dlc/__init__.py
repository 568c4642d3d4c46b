"""dlc: a declarative graph compiler and trainer for Deep Language Networks (Sordoni et al., NeurIPS 2023)."""
from __future__ import annotations

__version__ = "0.1.0"

from dlc.errors import DlcError

__all__ = ["DlcError", "__version__"]
