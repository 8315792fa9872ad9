"""What tools built on exec events need besides the stream itself.

``aioringbuf exec`` and the web example share these: one filter (with an
RE2 ``Pattern`` for names from strangers) and the text escapes
(``printable`` for JSON, ``terminal`` for a terminal), so the command line
and the page agree on what matches and how hostile names are printed::

    from aioringbuf.exec import ExecFilter, Pattern, printable

``fleet_events()`` reads what ``aioringbuf ship`` sent to NATS JetStream,
as ``FleetEvent`` s.

``exec_events()`` and ``ExecEvent`` are in the package root (and here);
``ExitEvent`` is what ``exec_events(exits=True)`` yields for an exit;
``ExecEvents`` is the type of the raw stream ``exec_events()`` returns.
"""

from ._escape import printable, terminal
from ._exec import DEFAULT_RING_SIZE, ExecEvent, ExecEvents, ExecFilter, ExitEvent, exec_events
from ._fleet import FleetEvent, fleet_events
from ._pattern import Pattern, PatternError

__all__ = ["DEFAULT_RING_SIZE", "ExecEvent", "ExecEvents", "ExecFilter", "ExitEvent",
           "exec_events", "printable", "terminal", "Pattern", "PatternError",
           "FleetEvent", "fleet_events"]
