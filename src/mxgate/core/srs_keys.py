"""SRS settings and the key ring: which key signs now, which keys still verify.

Owns ``SrsSettings`` (the SRS domain, per alias domain overrides, maximal age,
hash length, key grace period), ``SrsKey``/``SrsKeyRing`` (the keys of the
``mxgate_srs_key`` table as a gateway holds them) and ``SrsContext``, the one
value the routing core and the queue manager get: settings, keys and the time.

Key life cycle (``mxgate srs rotate``): a new key is inserted with
``signs_from`` a little in the future, so that every gateway has loaded it
before any gateway signs with it; the key it replaces gets ``retired_at`` =
that moment. The signing key at time t is the one with the latest
``signs_from`` <= t. A key verifies from the moment it is loaded (even
before it signs: another gateway's clock may be ahead) until
``retired_at + key_grace``. ``key_grace`` should be at least the maximal age
of an address, so that an address signed just before a rotation stays good
for as long as its timestamp does.

Staleness: keys read from the database less than ``STALE_AFTER`` seconds ago
are current; keys from the disk cache, or not refreshed for longer (database
down), may lack a newer key that another gateway already signs with. Then a
hash that does not verify is a temporary failure, never a 5xx (SPEC 7).

Pure: time is an argument; never reads the database (``directory.srs_keys``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MAX_AGE_DAYS = 21  # libsrs2, postsrsd and the Python ports
DEFAULT_HASH_LENGTH = 4
DEFAULT_KEY_GRACE = 30 * 86400
STALE_AFTER = 120.0
"""Seconds after the last read from the database at which the keys may be out of date."""


@dataclass(frozen=True, slots=True)
class SrsSettings:
    """What SRS needs from the configuration (built in app.py).

    domain:        the SRS domain: the domain of rewritten senders
                   (``srs_domain``, else ``myhostname``), lower-case
    overrides:     (alias domain, SRS domain) pairs: mail forwarded for a
                   recipient in the alias domain is rewritten into that SRS domain
    max_age_days:  how many days an SRS0 address stays valid
    hash_length:   characters of the hash we write, and the fewest we accept
    key_grace:     seconds a retired key still verifies
    """

    domain: str
    overrides: tuple[tuple[str, str], ...] = ()
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    hash_length: int = DEFAULT_HASH_LENGTH
    key_grace: float = DEFAULT_KEY_GRACE
    domains: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ours = {self.domain.lower(), *(srs.lower() for _alias, srs in self.overrides)}
        object.__setattr__(self, "domains", frozenset(ours))

    def domain_for(self, alias_domain: str) -> str:
        """The SRS domain for mail forwarded on behalf of ``alias_domain``."""
        alias = alias_domain.lower()
        for name, srs in self.overrides:
            if name.lower() == alias:
                return srs.lower()
        return self.domain.lower()

    def is_ours(self, domain: str) -> bool:
        """Is ``domain`` one of our SRS domains (addresses we reverse)?"""
        return domain.lower() in self.domains


@dataclass(frozen=True, slots=True)
class SrsKey:
    """One row of ``mxgate_srs_key``; times are Unix seconds."""

    id: int
    secret: str
    signs_from: float
    retired_at: float | None = None
    created: float = 0.0

    def verifies(self, now: float, grace: float) -> bool:
        return self.retired_at is None or now < self.retired_at + grace

    def state(self, now: float, grace: float, signing: SrsKey | None) -> str:
        """In words, for ``mxgate srs keys``."""
        if signing is not None and signing.id == self.id:
            return "signing"
        if self.signs_from > now:
            return "next (verifies; signs from its signs_from)"
        if self.verifies(now, grace):
            return "verifying only (retired)" if self.retired_at is not None else "verifying"
        return "expired (verifies nothing)"


@dataclass(frozen=True, slots=True)
class SrsKeyRing:
    """The keys a gateway holds.

    source:     "database", "disk-cache", or "none" (nothing loaded yet)
    synced_at:  Unix time of the last successful read from the database
    """

    keys: tuple[SrsKey, ...] = ()
    source: str = "none"
    synced_at: float | None = None

    @property
    def loaded(self) -> bool:
        return self.source != "none"

    def signing_key(self, now: float) -> SrsKey | None:
        """The key that signs at ``now``: of the keys not retired by then, the
        latest ``signs_from`` not after it (when each of them starts later, a
        clock behind the database's: the earliest). None: no key can sign."""
        live = [k for k in self.keys if k.retired_at is None or k.retired_at > now]
        started = [k for k in live if k.signs_from <= now]
        if started:
            return max(started, key=lambda k: (k.signs_from, k.id))
        if live:
            return min(live, key=lambda k: (k.signs_from, k.id))
        return None

    def verifying(self, now: float, grace: float) -> tuple[SrsKey, ...]:
        return tuple(k for k in self.keys if k.verifies(now, grace))

    def is_current(self, now: float) -> bool:
        """Read from the database recently enough that no key can be missing."""
        return (
            self.source == "database"
            and self.synced_at is not None
            and now - self.synced_at <= STALE_AFTER
        )


@dataclass(frozen=True, slots=True, init=False)
class SrsContext:
    """Everything an SRS decision needs at one moment."""

    settings: SrsSettings
    ring: SrsKeyRing
    now: float

    def __init__(self, settings: SrsSettings, ring: SrsKeyRing, now: float) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "ring", ring)
        object.__setattr__(self, "now", now)
