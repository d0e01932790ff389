"""The rows of the five tables as operators edit them (``mxgate domain|mailbox|...``).

The SQL behind the management commands and ``mxgate check``; the rules
themselves are pure and live in ``mxgate.core.rules`` and ``mxgate.core.check``.

    read.py    list (filters, paging), show (a row and its related rows),
               and the raw rows, original case, for ``check``
    write.py   add, edit and remove of domains, mailboxes and relays, each in
               one transaction, with the rules that need the current rows (is
               the domain ours, does the row exist, what still depends on a
               domain, does a relay have a gateway transport)
    write_forward.py  the same for forward and transport rows

Every value reaches PostgreSQL as a parameter; the only text formatted into
SQL is this package's own table and column names and fixed fragments. A rule
refusal or a missing row is a ``Refusal`` (``NotFound``), a database failure a
``DirectoryError``: the CLI turns both into exit status 1.
"""

from mxgate.directory.manage.read import (
    LIST_COLUMNS,
    ListQuery,
    Page,
    domain_details,
    forward_details,
    list_rows,
    load_raw,
    mailbox_details,
    relay_details,
    transport_details,
)
from mxgate.directory.manage.write import (
    NotFound,
    add_domain,
    add_mailbox,
    add_relay,
    edit_domain,
    edit_mailbox,
    edit_relay,
    remove_domain,
    remove_mailbox,
    remove_relay,
    set_password,
)
from mxgate.directory.manage.write_forward import (
    add_forwards,
    add_transport,
    edit_transport,
    remove_forwards,
    remove_transport,
)

__all__ = [
    "LIST_COLUMNS",
    "ListQuery",
    "NotFound",
    "Page",
    "add_domain",
    "add_forwards",
    "add_mailbox",
    "add_relay",
    "add_transport",
    "domain_details",
    "edit_domain",
    "edit_mailbox",
    "edit_relay",
    "edit_transport",
    "forward_details",
    "list_rows",
    "load_raw",
    "mailbox_details",
    "relay_details",
    "remove_domain",
    "remove_forwards",
    "remove_mailbox",
    "remove_relay",
    "remove_transport",
    "set_password",
    "transport_details",
]
