"""The value syntax of the SRS settings (``srs_*``), checked for ``config.py``.

Owns what an SRS domain, a per alias domain override, the maximal age and the
hash length may be. Takes values ``config.py`` has already parsed (a string,
a list, seconds, a whole number) and raises ``ValueError`` with the reason,
which ``config.py`` turns into a ``ConfigError`` naming the file and key.
Kept apart only to keep ``config.py`` small; imported by nothing else.
"""

from __future__ import annotations

import re

_DOMAIN_NAME = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)
DAY = 86400
TIMESTAMP_DAYS = 1024  # the SRS timestamp counts days modulo 1024
MIN_HASH, MAX_HASH = 4, 27  # 27: all of a base64 SHA-1 digest


def domain_name(text: str) -> str:
    """A domain in IDNA A-labels, lower-cased; '' (the default) stays ''."""
    text = text.lower()
    if text and not _DOMAIN_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a domain name (IDNA A-labels)")
    return text


def split_override(item: str) -> tuple[str, str]:
    """``"alias.example=srs.example"`` as (alias domain, SRS domain)."""
    alias, _, srs = item.partition("=")
    return alias, srs


def overrides(items: list[str]) -> tuple[str, ...]:
    checked: list[str] = []
    for item in items:
        alias, equals, srs = item.lower().partition("=")
        if not equals or not alias or not srs:
            raise ValueError(f"{item!r} is not ALIAS-DOMAIN=SRS-DOMAIN")
        checked.append(f"{domain_name(alias)}={domain_name(srs)}")
    return tuple(checked)


def max_age(seconds: int) -> int:
    """Whole days are what counts (the rest is dropped)."""
    if not DAY <= seconds < TIMESTAMP_DAYS * DAY:
        raise ValueError(f"must be at least 1d and less than {TIMESTAMP_DAYS}d")
    return seconds


def hash_length(length: int) -> int:
    if not MIN_HASH <= length <= MAX_HASH:
        raise ValueError(f"must be between {MIN_HASH} and {MAX_HASH}")
    return length
