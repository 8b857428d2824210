"""
Sizes as people write them (``2G``, ``512M``, ``64MiB``, ``1048576``) in bytes. Standard
library only (runs in the minion's Python).

Reached from execution and state modules as ``__utils__["serverfix_size.parse_size"]``.
"""

import re

SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
UNIT_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(size):
    """
    Return a size such as ``2G``, ``512M``, ``64MiB`` or ``1048576`` in bytes.

    Raises ``ValueError`` for anything else.
    """
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    match = SIZE_RE.match(str(size))
    if not match:
        raise ValueError(f"{size!r} is not a size such as 2G or 512M")
    return int(match.group(1)) * UNIT_FACTORS[match.group(2).upper()]
