"""How dmp's processes log: one line per record, to stderr (``dmp serve`` keeps it in
the data dir's ``server.log``), the same in every process it starts."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: int) -> None:
    """Log records of ``level`` and above to stderr, each as one ``FORMAT`` line."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
