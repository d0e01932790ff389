"""``mxgate srs rotate|keys|encode|decode``: the Sender Rewriting Scheme by hand.

``rotate`` adds a key to the database (it signs after ``--delay``, when every
gateway has read it; the keys it replaces verify for ``srs_key_grace``);
``keys`` lists them, secrets hidden unless ``--show-secrets``; ``encode``
prints the address a sender is rewritten to, exactly as the queue manager
does it; ``decode`` prints what an SRS address of ours stands for, or why it
does not verify (exit status 1). The keys come from the database, else from
the gateway's disk copy (said on stderr).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from mxgate.app import database, load_srs_keys, srs_settings
from mxgate.cli.common import EXIT_USAGE, ConfigOption, fail, settings
from mxgate.config import LoadedConfig, parse_duration
from mxgate.core.address import Address, AddressError, normalize_domain, parse_path
from mxgate.core.srs_keys import SrsContext, SrsKey, SrsKeyRing, SrsSettings
from mxgate.core.srs_policy import check_address, rewrite_sender
from mxgate.directory import DirectoryError, rotate
from mxgate.embedded import EmbeddedPostgresError

app = typer.Typer(no_args_is_help=True, help="Sender Rewriting Scheme: keys, encode, decode.")

DEFAULT_DELAY = "5m"  # more than a gateway takes to read a new key (30 s poll)


def _settings(loaded: LoadedConfig) -> SrsSettings:
    srs = srs_settings(loaded.config)
    if srs is None:
        fail("SRS is off (srs_enabled = false)")
    return srs


def _ring(loaded: LoadedConfig, *, quiet: bool = False, known: bool = False) -> SrsKeyRing:
    """The keys, saying where they came from unless ``quiet``; ``known``:
    fail when there are none because none could be read (rather than none
    in the database)."""
    keys = load_srs_keys(loaded.config)
    if known and not keys.ring.keys and keys.source.startswith("none"):
        fail(f"cannot tell the SRS keys: {keys.source.removeprefix('none ')}")
    if keys.source != "database" and not quiet:
        print(f"mxgate: SRS keys from {keys.source}", file=sys.stderr)
    return keys.ring


def context(loaded: LoadedConfig) -> SrsContext | None:
    """Settings, keys and the time for ``mxgate explain`` (which prints only
    the decision: where the keys came from shows in its trace when it
    matters); None when SRS is off."""
    srs = srs_settings(loaded.config)
    if srs is None:
        return None
    return SrsContext(srs, _ring(loaded, quiet=True), time.time())


def _when(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@app.command("rotate")
def rotate_cmd(
    config: ConfigOption = None,
    delay: Annotated[
        str,
        typer.Option(
            "--delay",
            help="When the new key starts to sign (every gateway reads it first). 0 with one "
            "gateway only.",
        ),
    ] = DEFAULT_DELAY,
) -> None:
    """Add a new key; the old ones verify for srs_key_grace after it starts signing."""
    loaded = settings(config)
    try:
        seconds = parse_duration(delay)
    except ValueError as exc:
        fail(f"--delay: {exc}", EXIT_USAGE)
    grace = _settings(loaded).key_grace
    try:
        with database(loaded.config) as dsn:
            done = asyncio.run(rotate(dsn, delay=seconds, grace=grace))
    except (DirectoryError, EmbeddedPostgresError) as exc:
        fail(str(exc))
    typer.echo(f"new SRS key {done.key_id} signs from {_when(done.signs_from)}")
    if done.retired:
        until = _when(done.signs_from + grace)
        typer.echo(f"{done.retired} key(s) retired then; they verify until {until}")
    if done.pruned:
        typer.echo(f"deleted expired key(s): {', '.join(str(k) for k in done.pruned)}")


def _describe(key: SrsKey, ring: SrsKeyRing, srs: SrsSettings, now: float) -> dict[str, object]:
    until = key.retired_at + srs.key_grace if key.retired_at is not None else None
    return {
        "id": key.id,
        "state": key.state(now, srs.key_grace, ring.signing_key(now)),
        "created": _when(key.created),
        "signs_from": _when(key.signs_from),
        "retired_at": _when(key.retired_at),
        "verifies_until": _when(until),
    }


@app.command("keys")
def keys_cmd(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array.")] = False,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Print the secrets too.")
    ] = False,
) -> None:
    """The SRS keys: which signs, which only verify, and until when."""
    loaded = settings(config)
    srs = _settings(loaded)
    ring = _ring(loaded, known=True)
    now = time.time()
    rows = []
    for key in ring.keys:
        row = _describe(key, ring, srs, now)
        row["secret"] = key.secret if show_secrets else None
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no SRS keys (mxgate db migrate creates the first one)")
        return
    for row in rows:
        typer.echo(f"key {row['id']}: {row['state']}")
        for name in ("created", "signs_from", "retired_at", "verifies_until"):
            if row[name] is not None:
                typer.echo(f"    {name + ':':<16}{row[name]}")
        typer.echo(f"    {'secret:':<16}{row['secret'] if show_secrets else '(hidden)'}")


@app.command("encode")
def encode_cmd(
    sender: Annotated[str, typer.Argument(help="The envelope sender (MAIL FROM).")],
    config: ConfigOption = None,
    alias_domain: Annotated[
        str,
        typer.Option(
            "--alias-domain",
            help="The domain of the forwarded recipient (picks srs_domain_overrides).",
        ),
    ] = "",
) -> None:
    """Print the address SENDER is rewritten to when mail to an outside address is forwarded."""
    loaded = settings(config)
    srs = _settings(loaded)
    text = sender.strip()
    if text in ("<>", ""):
        text = ""
    elif not isinstance(parse_path(text, smtputf8=True), Address):
        fail(f"{sender!r} is not an address", EXIT_USAGE)
    if alias_domain:
        domain = normalize_domain(alias_domain.strip())
        if isinstance(domain, AddressError):
            fail(f"--alias-domain {alias_domain!r} is not a domain name", EXIT_USAGE)
        alias_domain = domain
    ctx = SrsContext(srs, _ring(loaded), time.time())
    rewrite = rewrite_sender(ctx, text, alias_domain)
    if rewrite.rewritten:
        typer.echo(rewrite.sender)
        return
    if rewrite.no_key:
        fail(f"cannot rewrite: {rewrite.reason}")
    print(f"mxgate: not rewritten: {rewrite.reason}", file=sys.stderr)
    typer.echo(rewrite.sender or "<>")


@app.command("decode")
def decode_cmd(
    address: Annotated[str, typer.Argument(help="An SRS0 or SRS1 address of one of ours.")],
    config: ConfigOption = None,
) -> None:
    """Print the address an SRS address of ours stands for; exit 1 when it does not verify."""
    loaded = settings(config)
    srs = _settings(loaded)
    parsed = parse_path(address, smtputf8=True)
    if not isinstance(parsed, Address) or not parsed.is_qualified:
        fail(f"{address!r} is not an address", EXIT_USAGE)
    check = check_address(SrsContext(srs, _ring(loaded), time.time()), parsed)
    if check is None:
        domains = ", ".join(sorted(srs.domains))
        fail(f"{address}: not an SRS address of ours (our SRS domains: {domains})")
    if check.target is None:
        fail(f"{address}: {check.problem}")
    typer.echo(str(check.target))
