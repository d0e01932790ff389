"""Password hashes that Dovecot verifies, for ``mailbox.password``.

Owns the schemes mxgate writes and their Dovecot prefixes: ``{SHA512-CRYPT}``
(the default: ``$6$`` SHA-crypt, 5000 rounds unless told otherwise),
``{BLF-CRYPT}`` (bcrypt, written as ``$2y$`` as Dovecot writes it) and
``{ARGON2ID}`` (the PHC ``$argon2id$`` string libsodium verifies), the
checks a password must pass before it is hashed, and ``verify`` for our own
tests and sanity checks. Dovecot compares ``{SCHEME}hash`` itself; mxgate
never authenticates anyone.

Never sees a password from argv (the CLI reads it from a prompt or standard
input), never logs or prints one, and never stores a password in clear text.

Libraries, and why (the stdlib ``crypt`` module is deprecated and gone in
Python 3.13, so it is not an option):
- SHA512-CRYPT: ``libpass``, the maintained fork of passlib (passlib itself
  has had no release since 2020 and breaks on current Pythons). It imports as
  ``passlib`` and computes SHA-crypt in Python with hashlib, needing no
  system ``libcrypt``. A maintained library exists, so no implementation of
  our own.
- BLF-CRYPT: ``bcrypt`` (pyca), the reference binding everyone uses.
- ARGON2ID: ``argon2-cffi``, the reference binding of the Argon2 authors' C
  code, with its RFC 9106 "low memory" defaults (t=3, m=64 MiB, p=4).
"""

from __future__ import annotations

import enum
from typing import Any

# The hashing libraries are imported where they are used: only the two
# commands that hash passwords need them, never the gateway itself.

DEFAULT_SHA_ROUNDS = 5000
"""SHA-crypt's own default; with it the hash carries no ``rounds=`` field."""
SHA_ROUNDS_RANGE = (1000, 999_999_999)
"""The range the SHA-crypt specification allows."""
DEFAULT_BCRYPT_COST = 10
BCRYPT_COST_RANGE = (4, 31)
BCRYPT_MAX_BYTES = 72
"""bcrypt uses only the first 72 bytes; longer passwords are refused, not cut."""


class Scheme(enum.Enum):
    SHA512_CRYPT = "SHA512-CRYPT"
    BLF_CRYPT = "BLF-CRYPT"
    ARGON2ID = "ARGON2ID"

    @property
    def prefix(self) -> str:
        return "{" + self.value + "}"


DEFAULT_SCHEME = Scheme.SHA512_CRYPT


class PasswordError(ValueError):
    """A password or a hashing parameter that cannot be used; says why."""


# passlib refuses longer ones (its MAX_PASSWORD_SIZE); no real password is near.
MAX_PASSWORD_BYTES = 4096


def check_password(password: str, scheme: Scheme) -> None:
    """Refuse passwords no scheme can store faithfully."""
    if not password:
        raise PasswordError("the password is empty")
    if "\x00" in password:
        raise PasswordError("the password contains a NUL character (crypt(3) would cut it there)")
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        # Bytes that are not UTF-8 reach us as surrogates (from a terminal or
        # a pipe in another encoding); Dovecot compares UTF-8 bytes.
        raise PasswordError("the password is not UTF-8 text") from None
    if size > MAX_PASSWORD_BYTES:
        raise PasswordError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    if scheme is Scheme.BLF_CRYPT and size > BCRYPT_MAX_BYTES:
        raise PasswordError(
            f"BLF-CRYPT uses only the first {BCRYPT_MAX_BYTES} bytes of a password;"
            " choose a shorter one or another --scheme"
        )


def hash_password(password: str, scheme: Scheme = DEFAULT_SCHEME, rounds: int | None = None) -> str:
    """``{SCHEME}hash`` for ``mailbox.password``, with a new random salt.

    ``rounds``: SHA-crypt rounds (default 5000) or the bcrypt cost (default
    10); ARGON2ID takes none.
    """
    check_password(password, scheme)
    if scheme is Scheme.SHA512_CRYPT:
        n = DEFAULT_SHA_ROUNDS if rounds is None else rounds
        _in_range(n, SHA_ROUNDS_RANGE, "SHA512-CRYPT rounds")
        return scheme.prefix + str(_sha512_crypt().using(rounds=n).hash(password))
    if scheme is Scheme.BLF_CRYPT:
        import bcrypt

        cost = DEFAULT_BCRYPT_COST if rounds is None else rounds
        _in_range(cost, BCRYPT_COST_RANGE, "BLF-CRYPT cost")
        hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost)).decode("ascii")
        # $2b$ and $2y$ are the same algorithm (both without the old $2a$
        # bug); Dovecot writes $2y$, so the stored hashes look like its own.
        return scheme.prefix + "$2y$" + hashed.removeprefix("$2b$")
    if rounds is not None:
        raise PasswordError("--rounds does not apply to ARGON2ID")
    import argon2

    return scheme.prefix + argon2.PasswordHasher(type=argon2.Type.ID).hash(password)


def verify(password: str, stored: str) -> bool:
    """True when ``stored`` (``{SCHEME}hash``) is a hash of ``password``."""
    import argon2
    import bcrypt

    for scheme in Scheme:
        if not stored.startswith(scheme.prefix):
            continue
        hashed = stored[len(scheme.prefix) :]
        try:
            if scheme is Scheme.SHA512_CRYPT:
                return bool(_sha512_crypt().verify(password, hashed))
            if scheme is Scheme.BLF_CRYPT:
                return bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))
            return argon2.PasswordHasher().verify(hashed, password)
        except (ValueError, argon2.exceptions.VerificationError, argon2.exceptions.InvalidHash):
            return False
    return False


def _sha512_crypt() -> Any:
    """libpass's SHA512-CRYPT handler (libpass ships no type information)."""
    from passlib.hash import sha512_crypt  # type: ignore[import-untyped]

    return sha512_crypt


def scheme_of(stored: str) -> str:
    """The ``{SCHEME}`` name of a stored value, for display ('' when none)."""
    if stored.startswith("{") and "}" in stored:
        return stored[1 : stored.index("}")]
    return ""


def _in_range(value: int, bounds: tuple[int, int], what: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise PasswordError(f"{what} must be between {low} and {high}, not {value}")
