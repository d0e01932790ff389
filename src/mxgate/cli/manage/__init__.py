"""The table commands: ``mxgate domain|mailbox|forward|relay|transport ...``.

One module per table; ``output.py`` holds what they share (options, exit
codes, table and JSON output). The rules live in ``mxgate.core.rules``, the
SQL in ``mxgate.directory.manage``; these modules only read arguments, call
them and print.
"""

from mxgate.cli.manage import domain, forward, mailbox, relay, transport

__all__ = ["domain", "forward", "mailbox", "relay", "transport"]
