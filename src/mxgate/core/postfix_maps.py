"""``mxgate export postfix``: the tutorial's pgsql map files, corrected, and
the ``postconf -e`` lines that make a real Postfix route like mxgate on the
same database (SPEC sections 3-5 and 9).

Owns the text of five pgsql_table(5) files (``hosts``/``user``/``password``/
``dbname`` from the database URL, and a ``query``) and of ``postconf.txt``.
Each query answers one ``postmap -q KEY`` the way ``mxgate query MAP KEY``
does (core/query.py), with these corrections of SPEC section 9:

- relay_domains has a WHERE clause: only rows of ``domain`` are relay domains
  (and ``parent_domain_matches_subdomains`` loses relay_domains, so that a
  subdomain of ours is not one of ours either);
- every match is ``lower(column) = lower('%s')``, served by the lower()
  expression indexes of migration 0002, so rows stored in upper case match
  and no lookup scans a table (the tutorial's relay_recipients scanned
  ``mailbox``);
- virtual_forward: the exact rows win; the catch-all answers only when the
  address has none, and not for ``user+ext@d`` when ``user@d`` is a mailbox,
  relay or forward. Postfix looks ``user+ext@d`` up in every map before
  ``user@d`` (virtual(5)), so without that the catch-all would take a
  mailbox's plus-addresses; this is where the map differs from ``mxgate
  query``, which answers the single key;
- virtual_email2email comes first in ``virtual_alias_maps``: a mailbox or an
  exact relay maps to itself before any forward (SPEC section 4, step 1);
- transport reads only the rows of this role (SPEC section 1).

Stripping ``recipient_delimiter`` extensions is Postfix's own work (it asks
``user+ext@d``, then ``user@d``, then ``@d``); the queries answer the key
they are given, and strip an extension only for the guard above.

Pure: never does I/O. Names of the config (node, delimiter) become SQL
literals here, quoted, and ``%`` doubled for Postfix's own expansion.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

MAP_FILES = (
    "relay_domains.cf",
    "relay_recipients.cf",
    "virtual_forward.cf",
    "virtual_email2email.cf",
    "transport.cf",
)

# A forward row counts only when its destination names at least one address.
_HAS_TARGET = "destination ~ '[^[:space:],]'"
_DOMAIN_OF_KEY = "substring('%s' from '^.+@([^@]+)$')"
_CATCH_ALL_OF_KEY = "lower('@' || substring('%s' from '@([^@]+)$'))"


@dataclass(frozen=True, slots=True)
class PgsqlConnection:
    """How Postfix reaches the database (pgsql_table(5) parameters).

    hosts: libpq-style ``host:port`` items and ``unix:/dir`` sockets, or the
           whole URL when it says more than these can (see ``pgsql_connection``)
    notes: why ``hosts`` is the whole URL, for a comment in the map files
    """

    hosts: tuple[str, ...]
    user: str
    password: str
    dbname: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PostfixSettings:
    """The mxgate settings that the generated Postfix configuration mirrors."""

    map_dir: str
    node_name: str = ""
    node_fallback_to_gateway: bool = False
    recipient_delimiter: str = "+"
    myhostname: str = ""
    mynetworks: tuple[str, ...] = ("127.0.0.0/8", "[::1]/128")
    default_transport: str = "smtp:"
    relayhost: str = ""
    smtpd_recipient_limit: int = 1000
    virtual_alias_recursion_limit: int = 1000
    virtual_alias_expansion_limit: int = 1000
    message_size_limit: int | None = None


def _host(text: str) -> str | None:
    """``host:port`` as pgsql_table(5) takes it; None for an IPv6 literal
    (Postfix splits host and port at the last ':', so only a URI carries it)."""
    if text.startswith("["):
        return None
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = text, ""
    host = unquote(host)
    if host.startswith("/"):
        return f"unix:{host}"
    return f"{host}:{port}" if port else host


def pgsql_connection(url: str) -> PgsqlConnection:
    """pgsql_table(5) connection parameters from a libpq URL
    (``postgresql://user:password@host:port,host2:port/dbname?...``).

    ``hosts`` is a list of ``host:port`` (``unix:/dir`` for a socket
    directory given as ``?host=``). When the URL says more than that list can
    (sslmode and other parameters, IPv6 literals), ``hosts`` is the URL
    itself: Postfix hands a postgresql:// URI to libpq as it is, and then
    ignores ``user`` and ``password`` (checked with postmap). Raises
    ValueError for anything that is not such a URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {parts.scheme or url!r}")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if not at:
        userinfo, hostlist = "", parts.netloc
    user, _, password = userinfo.partition(":")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    port = params.pop("port", "")
    socket_dir = params.pop("host", "")
    user = unquote(user) or params.pop("user", "")
    password = unquote(password) or params.pop("password", "")
    dbname = unquote(parts.path.lstrip("/")) or params.pop("dbname", "") or user
    items = [_host(h) for h in hostlist.split(",") if h]
    if socket_dir:
        items = [_host(socket_dir)]
        if port:
            params["port"] = port  # unix:/dir has no port: only the URL carries it
    elif not items:
        items = ["unix:/var/run/postgresql"]
    if params or None in items:
        why = [f"{k}={v}" for k, v in params.items()] or ["an IPv6 address"]
        uri = "postgresql" + url[len(parts.scheme) :]
        notes = (f"hosts is the whole URL because of: {', '.join(why)}",)
        return PgsqlConnection((uri,), user, password, dbname, notes)
    hosts = [h for h in items if h is not None]
    if port:
        hosts = [h if h.startswith("unix:") or ":" in h else f"{h}:{port}" for h in hosts]
    return PgsqlConnection(tuple(hosts), user, password, dbname)


def _literal(value: str) -> str:
    """A SQL string literal for a query template (Postfix expands '%')."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"{value!r}: a line break cannot go into a map file")
    return "'" + value.replace("'", "''").replace("%", "%%") + "'"


def _class_items(chars: str) -> str:
    """Bracket-expression content for ``chars``: ']' first, '-' last,
    backslash escaped (an escape character inside brackets in PostgreSQL's
    advanced regular expressions)."""
    unique = sorted(set(chars), key=lambda c: (c != "]", c == "-", c))
    return "".join("\\\\" if c == "\\" else c for c in unique)


def _one_of(chars: str) -> str:
    """A regular expression matching one of ``chars``."""
    if len(chars) == 1:
        return chars if chars.isalnum() else "\\" + chars
    items = _class_items(chars)
    if items.startswith("^"):
        items = items[1:] + "^"
    return f"[{items}]"


def _sql_regex(pattern: str) -> str:
    """A regular expression inside a quoted literal of a query template."""
    return pattern.replace("'", "''").replace("%", "%%")


def relay_domains_query() -> list[str]:
    return [
        "SELECT lower(domain) FROM domain",
        "WHERE lower(domain) = lower('%s')",
        "LIMIT 1",
    ]


def relay_recipients_query() -> list[str]:
    return [
        "SELECT 'OK'",
        "WHERE EXISTS (SELECT 1 FROM mailbox WHERE lower(email) = lower('%s'))",
        "OR EXISTS (SELECT 1 FROM relay",
        f"    WHERE lower(source) IN (lower('%s'), {_CATCH_ALL_OF_KEY}))",
        "OR EXISTS (SELECT 1 FROM forward",
        f"    WHERE lower(source) IN (lower('%s'), {_CATCH_ALL_OF_KEY})",
        f"    AND {_HAS_TARGET})",
    ]


def _known_without_extension(delimiter: str) -> list[str]:
    """``user@d`` of a key ``user+ext@d`` is a mailbox, relay or forward."""
    if not delimiter:
        return []
    negated = "[^" + _class_items(delimiter + "@") + "]"
    pattern = _sql_regex(f"^({negated}+){_one_of(delimiter)}.*@[^@]+$")
    base = f"lower(substring('%s' from '{pattern}') || '@' || {_DOMAIN_OF_KEY})"
    return [
        "AND NOT EXISTS (SELECT 1",
        f"    FROM (SELECT {base} AS address) AS plain",
        "    WHERE EXISTS (SELECT 1 FROM mailbox WHERE lower(email) = plain.address)",
        "    OR EXISTS (SELECT 1 FROM relay WHERE lower(source) = plain.address)",
        "    OR EXISTS (SELECT 1 FROM forward WHERE lower(source) = plain.address",
        f"        AND {_HAS_TARGET}))",
    ]


def virtual_forward_query(delimiter: str) -> list[str]:
    return [
        "SELECT destination FROM (",
        "    SELECT destination FROM forward",
        f"    WHERE lower(source) = lower('%s') AND {_HAS_TARGET}",
        "    UNION ALL",
        "    SELECT destination FROM forward",
        f"    WHERE lower(source) = lower('@' || {_DOMAIN_OF_KEY})",
        f"    AND {_HAS_TARGET}",
        "    AND NOT EXISTS (SELECT 1 FROM forward",
        f"        WHERE lower(source) = lower('%s') AND {_HAS_TARGET})",
        *("    " + line for line in _known_without_extension(delimiter)),
        ') AS found ORDER BY destination COLLATE "C"',
    ]


def virtual_email2email_query() -> list[str]:
    return [
        "SELECT lower('%s')",
        "WHERE EXISTS (SELECT 1 FROM mailbox WHERE lower(email) = lower('%s'))",
        "OR EXISTS (SELECT 1 FROM relay WHERE lower(source) = lower('%s'))",
    ]


# Among case variants of one key, the row written in lower case wins, else
# the smallest (directory/fold.py chooses the same way).
_VARIANT_ORDER = 'domain <> lower(domain), domain COLLATE "C"'


def transport_query(node_name: str, fallback: bool) -> list[str]:
    node = "coalesce(node, '')"
    if not node_name or not fallback:
        return [
            "SELECT transport FROM (SELECT transport FROM transport",
            f"    WHERE lower(domain) = lower('%s') AND {node} = {_literal(node_name)}",
            f"    ORDER BY {_VARIANT_ORDER} LIMIT 1) AS chosen",
            "WHERE transport ~ '[^[:space:]]'",
        ]
    own = _literal(node_name)
    return [
        f"SELECT transport FROM (SELECT DISTINCT ON ({node}) transport, {node} = {own} AS own",
        "    FROM transport",
        f"    WHERE lower(domain) = lower('%s') AND {node} IN ({own}, '')",
        f"    ORDER BY {node}, {_VARIANT_ORDER}) AS chosen",
        "WHERE transport ~ '[^[:space:]]'",
        "ORDER BY own DESC LIMIT 1",
    ]


_PURPOSE = {
    "relay_domains.cf": "relay_domains: the domains in table domain, and nothing else.",
    "relay_recipients.cf": (
        "relay_recipient_maps: 'OK' for a known recipient (SPEC section 3): a mailbox,"
        " a relay, a forward with a destination, or an address of a domain with a"
        " forward or relay catch-all."
    ),
    "virtual_forward.cf": (
        "virtual_alias_maps (second): the exact forward rows, else the catch-all of the"
        " domain, unless user@domain of user+ext@domain is known."
    ),
    "virtual_email2email.cf": (
        "virtual_alias_maps (first): a mailbox or a relay address maps to itself."
    ),
    "transport.cf": "transport_maps: the transport rows of this role.",
}


def _cf_text(name: str, conn: PgsqlConnection, query: list[str], role: str) -> str:
    lines = [
        f"# {name}, written by `mxgate export postfix` for the {role}.",
        f"# {_PURPOSE[name]}",
        "# It holds the database password: chown root:postfix, chmod 640.",
    ]
    lines += [f"# {note}" for note in conn.notes]
    lines += [
        f"hosts = {' '.join(conn.hosts)}",
        f"user = {conn.user}",
        f"password = {conn.password}",
        f"dbname = {conn.dbname}",
        "query = " + "\n    ".join(query),
    ]
    return "\n".join(lines) + "\n"


def _role(settings: PostfixSettings) -> str:
    if not settings.node_name:
        return "gateway role (transport rows with node '' or NULL)"
    extra = ", else the gateway rows" if settings.node_fallback_to_gateway else ""
    return f"node {settings.node_name!r} (its own transport rows{extra})"


def map_files(conn: PgsqlConnection, settings: PostfixSettings) -> dict[str, str]:
    """File name -> text of the five pgsql map files."""
    for value in (conn.user, conn.password, conn.dbname, *conn.hosts):
        if "\n" in value or "\r" in value:
            raise ValueError("a line break in the database URL cannot go into a map file")
    queries = {
        "relay_domains.cf": relay_domains_query(),
        "relay_recipients.cf": relay_recipients_query(),
        "virtual_forward.cf": virtual_forward_query(settings.recipient_delimiter),
        "virtual_email2email.cf": virtual_email2email_query(),
        "transport.cf": transport_query(settings.node_name, settings.node_fallback_to_gateway),
    }
    role = _role(settings)
    return {name: _cf_text(name, conn, queries[name], role) for name in MAP_FILES}


# Postfix's default list without relay_domains (postconf -d, Postfix 3.7).
PARENT_DOMAIN_MATCHES = (
    "debug_peer_list, fast_flush_domains, mynetworks, permit_mx_backup_networks,"
    " qmqpd_authorized_clients, smtpd_access_maps"
)


def postconf_settings(settings: PostfixSettings) -> list[tuple[str, str, str]]:
    """(parameter, value, why) for main.cf."""
    where = settings.map_dir.rstrip("/")

    def pgsql(name: str) -> str:
        return f"pgsql:{where}/{name}"

    found = [
        ("relay_domains", pgsql("relay_domains.cf"), "our domains: the rows of domain"),
        ("parent_domain_matches_subdomains", PARENT_DOMAIN_MATCHES, "no subdomains of ours"),
        ("relay_recipient_maps", pgsql("relay_recipients.cf"), "550 5.1.1 for unknown users"),
        ("smtpd_reject_unlisted_recipient", "yes", "decide at RCPT TO"),
        ("virtual_alias_domains", "", "our domains are relay domains"),
        (
            "virtual_alias_maps",
            f"{pgsql('virtual_email2email.cf')}, {pgsql('virtual_forward.cf')}",
            "mailbox and relay addresses first, then forwards",
        ),
        ("transport_maps", pgsql("transport.cf"), "next hop per domain"),
        (
            "relay_transport",
            "retry:no route to this domain in table transport",
            "no transport row: defer, never guess",
        ),
        ("recipient_delimiter", settings.recipient_delimiter, "user+ext@domain"),
        ("propagate_unmatched_extensions", "canonical, virtual", "keep +ext on forwards"),
        ("mydestination", "", "no local delivery on a gateway"),
        ("mynetworks", " ".join(settings.mynetworks), "clients that may relay"),
        ("smtpd_relay_restrictions", "permit_mynetworks, reject_unauth_destination", "no relay"),
        (
            "smtpd_recipient_restrictions",
            "permit_mynetworks, reject_unauth_destination",
            "554 5.7.1 Relay access denied",
        ),
        ("smtpd_recipient_limit", str(settings.smtpd_recipient_limit), "452 4.5.3"),
        ("virtual_alias_recursion_limit", str(settings.virtual_alias_recursion_limit), ""),
        ("virtual_alias_expansion_limit", str(settings.virtual_alias_expansion_limit), ""),
        ("default_transport", settings.default_transport or "smtp:", "domains not ours"),
        ("relayhost", settings.relayhost, "next hop for domains not ours"),
    ]
    if settings.myhostname:
        found.append(("myhostname", settings.myhostname, "banner and HELO"))
    if settings.message_size_limit is not None:
        found.append(("message_size_limit", str(settings.message_size_limit), ""))
    return found


POSTCONF_NOTES = (
    "# What Postfix cannot do as mxgate does (SPEC sections 3, 4, 7 and 9):",
    "# - a recipient whose forwards reach nothing deliverable, or that has no route,",
    "#   is accepted and bounced later (mxgate refuses it at RCPT TO);",
    "# - with the database down every RCPT TO is deferred (mxgate serves its snapshot);",
    "# - postmaster@<our domain> without a row of its own is refused as unknown;",
    "# - a node's own '*' transport does not beat a gateway row for the domain when",
    "#   node_fallback_to_gateway is set (each key is answered on its own).",
)


def postconf_text(settings: PostfixSettings) -> str:
    """``postconf.txt``: shell lines to run on the Postfix host."""
    lines = [
        "# Written by `mxgate export postfix`: run these on the Postfix host, then",
        "# `postfix reload`. They make Postfix route like mxgate on the same database.",
        f"# The map files are expected in {settings.map_dir}; copy them there first.",
        *POSTCONF_NOTES,
        "",
    ]
    for name, value, why in postconf_settings(settings):
        if why:
            lines.append(f"# {why}")
        lines.append(f"postconf -e {shlex.quote(f'{name} = {value}'.rstrip())}")
    return "\n".join(lines) + "\n"
