"""``python -m aioringbuf`` and the ``aioringbuf`` console script.

The command's modules (the loader, anyio, msgspec, the exec tracer) take a
good part of a second to import. This module imports them inside
:func:`main`, so a Ctrl-C in that time ends the command with one line and
status 130, as a Ctrl-C later in start-up does, not with a traceback. The
package root imports nothing itself (its names load on first use).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from ._cli import main as cli_main
    except KeyboardInterrupt:
        print("aioringbuf: interrupted (SIGINT) while starting; nothing was traced",
              file=sys.stderr)
        return 128 + signal.SIGINT
    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
