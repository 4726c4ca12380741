"""A file's permission bits, for tests of who may read what."""

import stat
from pathlib import Path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
