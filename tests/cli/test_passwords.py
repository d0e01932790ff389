"""Password hashes that Dovecot itself verifies (``doveadm pw -t``), written by
``mxgate mailbox add|passwd`` from standard input, never from argv.

doveadm comes with Debian's dovecot-core (scripts/install-tools); without it
these tests skip, unless MXGATE_TEST_REQUIRE_TOOLS=1 says it must be there.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from mxgate.cli import app
from mxgate.directory.admin import prepare_example_database
from mxgate.passwords import PasswordError, Scheme, hash_password, scheme_of, verify

runner = CliRunner()
ADDRESS = "james@server1.example.com"


def doveadm_path() -> str:
    path = shutil.which("doveadm") or shutil.which("doveadm", path="/usr/bin:/usr/sbin")
    if path is None:
        message = "doveadm is not installed (scripts/install-tools installs dovecot-core)"
        if os.environ.get("MXGATE_TEST_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def doveadm() -> str:
    return doveadm_path()


def dovecot_verifies(doveadm: str, stored: str, password: str) -> bool:
    """``doveadm pw -t`` exits 0 when the password matches the hash."""
    result = subprocess.run(
        [doveadm, "pw", "-t", stored, "-p", password],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0 and "(verified)" in result.stdout


@pytest.mark.parametrize(
    ("scheme", "rounds", "prefix"),
    [
        (Scheme.SHA512_CRYPT, None, "{SHA512-CRYPT}$6$"),
        (Scheme.SHA512_CRYPT, 10000, "{SHA512-CRYPT}$6$rounds=10000$"),
        (Scheme.BLF_CRYPT, None, "{BLF-CRYPT}$2y$10$"),
        (Scheme.BLF_CRYPT, 5, "{BLF-CRYPT}$2y$05$"),
        (Scheme.ARGON2ID, None, "{ARGON2ID}$argon2id$"),
    ],
)
def test_dovecot_verifies_each_scheme(
    doveadm: str, scheme: Scheme, rounds: int | None, prefix: str
) -> None:
    for password in ("secret", "pässwörd with spaces", "'; DROP TABLE mailbox; --"):
        stored = hash_password(password, scheme, rounds)
        assert stored.startswith(prefix)
        assert verify(password, stored) and not verify(password + "x", stored)
        assert dovecot_verifies(doveadm, stored, password)
        assert not dovecot_verifies(doveadm, stored, "wrong")


def test_sha512_crypt_default_has_no_rounds_field() -> None:
    stored = hash_password("secret")
    assert stored.startswith("{SHA512-CRYPT}$6$") and "rounds=" not in stored
    assert len(stored) <= 255 and scheme_of(stored) == "SHA512-CRYPT"
    assert hash_password("secret") != stored  # a new salt every time


@pytest.mark.parametrize(
    ("password", "scheme", "rounds", "words"),
    [
        ("", Scheme.SHA512_CRYPT, None, "empty"),
        ("a\x00b", Scheme.SHA512_CRYPT, None, "NUL"),
        ("x" * 73, Scheme.BLF_CRYPT, None, "72 bytes"),
        pytest.param("x" * 4097, Scheme.SHA512_CRYPT, None, "longer than 4096", id="4097-bytes"),
        ("x\udcff", Scheme.SHA512_CRYPT, None, "not UTF-8"),  # a byte 0xff, surrogate-escaped
        ("secret", Scheme.SHA512_CRYPT, 999, "between 1000"),
        ("secret", Scheme.BLF_CRYPT, 32, "between 4 and 31"),
        ("secret", Scheme.ARGON2ID, 3, "does not apply"),
    ],
)
def test_unusable_passwords_and_parameters(
    password: str, scheme: Scheme, rounds: int | None, words: str
) -> None:
    with pytest.raises(PasswordError, match=words):
        hash_password(password, scheme, rounds)


# --- through the CLI ----------------------------------------------------------


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    asyncio.run(prepare_example_database(database_url))
    return {"MXGATE_DATABASE_URL": database_url, "MXGATE_STATE_DIR": str(tmp_path / "state")}


def stored_password(env: dict[str, str], email: str) -> str:
    async def go() -> str:
        conn = await asyncpg.connect(env["MXGATE_DATABASE_URL"])
        try:
            return str(await conn.fetchval("SELECT password FROM mailbox WHERE email = $1", email))
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "blf-crypt", "ARGON2ID"])
def test_mailbox_add_from_stdin_stores_a_hash_dovecot_verifies(
    env: dict[str, str], doveadm: str, scheme: str
) -> None:
    email = "new@server1.example.com"
    result = runner.invoke(
        app, ["mailbox", "add", email, "--scheme", scheme], env=env, input="s3cret pass\n"
    )
    assert result.exit_code == 0, result.output
    stored = stored_password(env, email)
    assert scheme_of(stored) == scheme.upper()
    assert "s3cret" not in stored
    assert dovecot_verifies(doveadm, stored, "s3cret pass")


def test_mailbox_passwd_replaces_the_hash(env: dict[str, str], doveadm: str) -> None:
    result = runner.invoke(
        app,
        ["mailbox", "passwd", ADDRESS, "--scheme", "SHA512-CRYPT", "--rounds", "20000"],
        env=env,
        input="another\r\n",
    )
    assert result.exit_code == 0, result.output
    stored = stored_password(env, ADDRESS)
    assert "$rounds=20000$" in stored
    assert dovecot_verifies(doveadm, stored, "another")


def test_password_is_never_an_argument(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["mailbox", "add", "x@server1.example.com", "secret"], env=env)
    assert result.exit_code == 2
    assert stored_password(env, "x@server1.example.com") == "None"


def test_an_empty_stdin_is_refused(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["mailbox", "add", "x@server1.example.com"], env=env, input="")
    assert result.exit_code == 1 and "the password is empty" in result.output


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            assert chunk, f"no {marker!r} in {bytes(seen)!r}"
            seen += chunk


def test_on_a_terminal_the_password_is_prompted_twice_without_echo(env: dict[str, str]) -> None:
    email = "tty@server1.example.com"
    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "mxgate", "mailbox", "add", email],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, **env},
        start_new_session=True,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        _read_until(controller, b"Password: ", seen)
        os.write(controller, b"typed secret\n")
        _read_until(controller, b"confirmation: ", seen)
        os.write(controller, b"typed secret\n")
        _read_until(controller, b"added mailbox", seen)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(controller)
    assert b"typed secret" not in seen  # never echoed
    assert verify("typed secret", stored_password(env, email))


@pytest.mark.parametrize("encoding", ["utf-8:surrogateescape", "utf-8:strict"])
def test_a_password_in_bytes_that_are_not_utf8(env: dict[str, str], encoding: str) -> None:
    """Through a real process: stdin decoded leniently (surrogates) or strictly."""
    result = subprocess.run(
        [sys.executable, "-m", "mxgate", "mailbox", "add", "y@server1.example.com"],
        input=b"caf\xe9\n",
        capture_output=True,
        env={**os.environ, **env, "PYTHONIOENCODING": encoding},
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode() == "mxgate: the password is not UTF-8 text\n"


def test_passwd_of_a_mailbox_that_does_not_exist_asks_nothing(env: dict[str, str]) -> None:
    """It asked for the password (twice on a terminal) and only then said the
    mailbox did not exist; now it says so before reading anything."""
    # Nothing on stdin: read first, that was "the password is empty".
    result = runner.invoke(
        app, ["mailbox", "passwd", "nosuch@server1.example.com"], env=env, input=""
    )
    assert result.exit_code == 1
    assert result.output == "mxgate: mailbox nosuch@server1.example.com does not exist\n"
