"""The database the mailbox servers' Dovecot reads, after mxgate upgraded it.

A tutorial database (its DDL and example rows) is upgraded by ``mxgate db
migrate``; a mailbox is added with ``mxgate mailbox add``; a real Dovecot (its
own private instance: SQL passdb and userdb on the same ``mailbox`` table,
LMTP on a unix socket) then authenticates that user with the hash mxgate
wrote, and mxgate in the node role delivers to it over LMTP, as the
``transport`` row for the node says. Nothing here is a stand-in: Dovecot's
own pgsql driver reads the rows, and the messages land in its Maildirs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.directory.helpers import make_tutorial
from tests.e2e.conftest import _find_tool, missing
from tests.e2e.gateway import OUTSIDE, child_environment, running_gateway, wait_until
from tests.pg import PgServer

PASSWORD = "correct horse battery"

# A mailbox server's dovecot-sql.conf.ext over the tutorial's tables: the
# user is the mailbox's address, its password column the hash.
SQL_CONF = """\
driver = pgsql
connect = host={host} port={port} dbname={dbname} user={user}
default_pass_scheme = SHA512-CRYPT
password_query = SELECT email AS user, password FROM mailbox WHERE email = '%u'
user_query = SELECT email AS user FROM mailbox WHERE email = '%u'
iterate_query = SELECT email AS user FROM mailbox
"""

DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = lmtp
ssl = no
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
mail_location = maildir:{root}/mail/%d/%n
auth_mechanisms = plain
passdb {{
  driver = sql
  args = {root}/sql.conf.ext
}}
userdb {{
  driver = sql
  args = {root}/sql.conf.ext
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
"""


@dataclass
class Dovecot:
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def lmtp(self) -> Path:
        return self.root / "run" / "lmtp"

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.root / "mail" / domain / local

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def tutorial_database(pg_server: PgServer) -> Iterator[str]:
    """The tutorial's database, upgraded by ``mxgate db migrate``."""
    dsn = pg_server.create_database()
    try:
        asyncio.run(make_tutorial(dsn))
        mxgate(dsn, "db", "migrate")
        yield dsn
    finally:
        pg_server.drop_database(dsn)


def mxgate(dsn: str, *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mxgate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**child_environment(), "MXGATE_DATABASE_URL": dsn},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def dovecot(tutorial_database: str) -> Iterator[Dovecot]:
    binary = _find_tool("dovecot")
    if not Path("/usr/lib/dovecot/lmtp").exists():
        missing("Dovecot's LMTP server is not installed (scripts/install-tools installs it)")
    if not Path("/usr/lib/dovecot/modules/auth/libdriver_pgsql.so").exists():
        missing("Dovecot's pgsql driver is not installed (scripts/install-tools installs it)")
    if os.geteuid() != 0:
        pytest.skip("Dovecot's master runs as root")
    # Not under pytest's tmp_path: its parents are closed to Dovecot's
    # unprivileged processes (the delivery runs as mail_uid).
    root = Path(tempfile.mkdtemp(prefix="mxgate-dovecot-"))
    root.chmod(0o755)
    (root / "mail").mkdir()
    shutil.chown(root / "mail", "nobody", "nogroup")
    url = urlsplit(tutorial_database)
    (root / "sql.conf.ext").write_text(
        SQL_CONF.format(
            host=url.hostname, port=url.port, dbname=url.path.lstrip("/"), user=url.username
        )
    )
    (root / "dovecot.conf").write_text(DOVECOT_CONF.format(root=root))
    process = subprocess.Popen(
        [binary, "-F", "-c", str(root / "dovecot.conf")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(root / "stderr").open("wb"),
    )
    server = Dovecot(root, process)
    try:
        wait_until(lambda: server.lmtp.exists() or process.poll() is not None, 30)
        assert process.poll() is None, (root / "stderr").read_text() + server.log()
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def doveadm(server: Dovecot, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_find_tool("doveadm"), "-c", str(server.config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def delivered(server: Dovecot, address: str) -> list[bytes]:
    new = server.maildir(address) / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.exists() else []


def test_dovecot_reads_the_upgraded_tables_and_takes_mail_from_the_node(
    tmp_path: Path, tutorial_database: str, dovecot: Dovecot
) -> None:
    mxgate(tutorial_database, "mailbox", "add", "carol@server1.example.com", stdin=PASSWORD)
    # Dovecot's passdb verifies the hash mxgate wrote into the widened column.
    check = doveadm(dovecot, "auth", "test", "carol@server1.example.com", PASSWORD)
    assert check.returncode == 0 and "auth succeeded" in check.stdout, check.stdout + check.stderr
    wrong = doveadm(dovecot, "auth", "test", "carol@server1.example.com", "wrong")
    assert wrong.returncode != 0 and "auth failed" in wrong.stdout

    # The node's own transport row (SPEC section 1): this node delivers to its Dovecot.
    mxgate(
        tutorial_database,
        "transport",
        "add",
        "server1.example.com",
        f"lmtp:unix:{dovecot.lmtp}",
        "--node",
        "maila",
    )
    with running_gateway(
        tmp_path / "node", tutorial_database, node_name="maila", queue_run_delay="1s"
    ) as node:
        with node.smtp(OUTSIDE) as client:
            client.ehlo("client.example.org")
            client.mail("sender@example.org")
            for recipient in ("carol@server1.example.com", "james@server1.example.com"):
                assert client.rcpt(recipient)[0] == 250
            code, reply = client.data(b"Subject: via LMTP\r\n\r\nTo Dovecot.\r\n")
        assert code == 250, reply
        queue_id = reply.decode().rsplit(" ", 1)[-1]
        node.wait_for_log(rf"{queue_id}: removed", timeout=30)
        log = node.log()
    for address in ("carol@server1.example.com", "james@server1.example.com"):
        [message] = delivered(dovecot, address)
        assert b"Subject: via LMTP" in message
        assert f"by mx.test.example (mxgate) with ESMTP id {queue_id}".encode() in message
        # Logged as Postfix's lmtp agent logs it (pflogsumm groups by agent).
        relay = f"localhost[{dovecot.lmtp}]"
        assert re.search(
            rf"mxgate/lmtp\[\d+\]: {queue_id}: to=<{address}>, relay={re.escape(relay)}, "
            r".*dsn=2\.0\.0, status=sent \(.* Saved",
            log,
        ), log
    deadline = time.monotonic() + 10
    while "saved mail to INBOX" not in dovecot.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dovecot.log().count("saved mail to INBOX") == 2, dovecot.log()
