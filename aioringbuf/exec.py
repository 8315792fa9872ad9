"""What tools built on exec events need besides the stream itself.

``aioringbuf exec`` and the web example share these: one filter (with an
RE2 ``Pattern`` for names from strangers) and the text escapes
(``printable`` for JSON, ``terminal`` for a terminal), so the command line
and the page agree on what matches and how hostile names are printed::

    from aioringbuf.exec import ExecFilter, Pattern, printable

``kernel_text(raw)`` and ``kernel_bytes(text)`` convert between the
kernel's bytes and ExecEvent's text, in which each byte that is not UTF-8
is U+10FF00 + byte (the one lossless JSON form).

``fleet_events()`` reads what ``aioringbuf ship`` sent to NATS JetStream,
as ``FleetEvent`` s.

``exec_events()`` and ``ExecEvent`` are in the package root (and here);
``ExitEvent`` is what ``exec_events(exits=True)`` yields for an exit;
``ExecEvents`` is the type of the raw stream ``exec_events()`` returns.
"""

from ._escape import printable, terminal
from ._exec import DEFAULT_RING_SIZE, ExecEvent, ExecEvents, ExecFilter, ExitEvent, exec_events
from ._fleet import FleetEvent, fleet_events
from ._kerneltext import kernel_bytes, kernel_text
from ._pattern import Pattern, PatternError

__all__ = ["DEFAULT_RING_SIZE", "ExecEvent", "ExecEvents", "ExecFilter", "ExitEvent",
           "exec_events", "printable", "terminal", "Pattern", "PatternError",
           "FleetEvent", "fleet_events", "kernel_text", "kernel_bytes"]
