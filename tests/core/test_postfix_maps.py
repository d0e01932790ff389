"""The pure parts of ``mxgate export postfix``: connection lines and query texts.

(The queries themselves are run by the real postmap in
tests/cli/test_export_postfix.py.)
"""

from __future__ import annotations

import pytest

from mxgate.core.postfix_maps import (
    PostfixSettings,
    map_files,
    pgsql_connection,
    postconf_text,
    transport_query,
    virtual_forward_query,
)

URI = "postgresql://u@h/mail?sslmode=require"
V6 = "postgresql://u@[::1]:5432/mail"
SOCKET_PORT = "postgresql:///m?host=/run/pg&port=5433"


@pytest.mark.parametrize(
    ("url", "hosts", "user", "password", "dbname"),
    [
        ("postgresql://u:p%40ss@db1:5433,db2/mail", ("db1:5433", "db2"), "u", "p@ss", "mail"),
        ("postgresql:///mail?host=/run/postgresql", ("unix:/run/postgresql",), "", "", "mail"),
        ("postgres://h?dbname=x&user=y&port=6000", ("h:6000",), "y", "", "x"),
        (URI, (URI,), "u", "", "mail"),
        (V6, (V6,), "u", "", "mail"),
        (SOCKET_PORT, (SOCKET_PORT,), "", "", "m"),
    ],
)  # fmt: skip
def test_connection_parameters_from_the_url(
    url: str, hosts: tuple[str, ...], user: str, password: str, dbname: str
) -> None:
    found = pgsql_connection(url)
    assert (found.hosts, found.user, found.password, found.dbname) == (
        hosts,
        user,
        password,
        dbname,
    )
    # When hosts must be the whole URL, the files say why.
    assert bool(found.notes) == hosts[0].startswith("postgresql://")


def test_not_a_postgresql_url() -> None:
    with pytest.raises(ValueError, match="not a postgresql:// URL"):
        pgsql_connection("mysql://h/db")


def test_config_values_are_quoted_for_sql_and_for_postfix() -> None:
    text = "\n".join(transport_query("o'brien%", fallback=True))
    assert "'o''brien%%'" in text
    assert "\\%%" in "\n".join(virtual_forward_query("%"))
    assert "\\'' " not in "\n".join(virtual_forward_query("'"))
    with pytest.raises(ValueError, match="line break"):
        transport_query("a\nb", fallback=False)


def test_no_query_line_could_end_the_parameter() -> None:
    """Postfix continues a parameter on lines that start with blanks; a line
    starting with '#' after them would be a comment."""
    conn = pgsql_connection("postgresql://u:pw@h:5432/db")
    for delimiter in ("", "+", "-"):
        settings = PostfixSettings(map_dir="/etc/postfix/mxgate", recipient_delimiter=delimiter)
        for name, text in map_files(conn, settings).items():
            lines = text.splitlines()
            start = next(i for i, line in enumerate(lines) if line.startswith("query = "))
            assert all(line.startswith("    ") for line in lines[start + 1 :]), name
            assert all(not line.strip().startswith("#") for line in lines[start:]), name
            assert "password = pw" in lines


def test_gateway_and_node_transport_filters() -> None:
    assert "coalesce(node, '') = ''" in "\n".join(transport_query("", fallback=True))
    node = "\n".join(transport_query("maila", fallback=False))
    assert "= 'maila'" in node and "IN (" not in node
    assert "IN ('maila', '')" in "\n".join(transport_query("maila", fallback=True))


def test_postconf_lines_are_shell_quoted() -> None:
    text = postconf_text(PostfixSettings(map_dir="/etc/postfix/my maps", myhostname="mx.example"))
    assert "postconf -e 'relay_domains = pgsql:/etc/postfix/my maps/relay_domains.cf'" in text
    assert "postconf -e 'myhostname = mx.example'" in text
    assert "postconf -e 'relayhost ='" in text
