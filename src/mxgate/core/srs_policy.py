"""Where SRS applies: the RCPT check of our SRS addresses, and which copies are rewritten.

Owns three decisions (issue 8):

- ``reverse_recipient``: at RCPT, an address at one of our SRS domains whose
  local part carries the SRS0/SRS1 tag is accepted only when its hash (with
  a key that still verifies) and its timestamp check out; it then stands for
  the original sender (SRS0) or the first forwarder's SRS0 address (SRS1),
  which is routed like any address, relayed out for any client. A forged or
  expired one is refused with 550 5.1.1 and the reason; keys that were never
  loaded, or may be out of date, make a failed check 451 4.3.0 instead (never
  a 5xx because of a lookup problem). SRS addresses of other domains are
  ordinary addresses: this module leaves them alone.
- ``mark_forwards``: a final recipient outside our domains reached through
  a forward of one of our recipients gets ``Delivery.srs``; nothing else does
  (mail to our own next hops, relaying for ``mynetworks``).
- ``rewrite_sender`` / ``sender_for_copy``: the envelope sender such a copy
  leaves with. Never the null sender, never a sender already at one of our
  SRS domains (the scheme leaves those: their bounces come back to us anyway).

Pure: keys and time come in an ``SrsContext``; never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mxgate.core.address import (
    MAX_LOCAL_PART,
    Address,
    is_dot_atom,
    parse_path,
    quote_local,
    unquote_local,
)
from mxgate.core.decision import Delivery, RecipientDecision
from mxgate.core.envelope import Recipient
from mxgate.core.reply import Reply
from mxgate.core.snapshot import RoutingData
from mxgate.core.srs import SrsError, SrsKind, SrsProblem, forward, parse, reverse
from mxgate.core.srs_keys import SrsContext

ROUTE_FLAG = "srs"
"""Key of the spool's route record that marks a copy to rewrite."""


@dataclass(frozen=True, slots=True)
class SenderRewrite:
    """The envelope sender of one outbound copy.

    sender:     the sender to use (the original when not rewritten)
    rewritten:  whether SRS changed it
    reason:     why or why not, for logs and ``explain``
    no_key:     it would be rewritten, but no key can sign
    temporary:  (and) no key was ever loaded: the copy waits (deferred)
                rather than leave unrewritten
    """

    sender: str
    rewritten: bool
    reason: str
    no_key: bool = False
    temporary: bool = False


def _address_text(local: str, domain: str) -> str:
    return f"{local if is_dot_atom(local) else quote_local(local)}@{domain}"


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _octets(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class SrsCheck:
    """The verdict on an SRS address of ours.

    kind:       SRS0 or SRS1 (None when the local part is malformed)
    target:     the address it stands for, when it verifies
    problem:    why it does not, in words
    temporary:  the keys were never loaded or may be out of date: try later
    """

    kind: SrsKind | None
    target: Address | None = None
    problem: str = ""
    temporary: bool = False


def check_address(ctx: SrsContext, address: Address) -> SrsCheck | None:
    """Verify an address at one of our SRS domains; None when ``address``
    is not one (another domain, or no SRS0/SRS1 tag)."""
    settings = ctx.settings
    # Every RCPT passes here: a set lookup (parsed domains are lower-case).
    if address.domain not in settings.domains:
        return None
    parsed = parse(unquote_local(address.local))
    if parsed is None:
        return None
    if isinstance(parsed, SrsError):
        return SrsCheck(None, problem=str(parsed))
    ring = ctx.ring
    if not ring.loaded:
        return SrsCheck(parsed.kind, problem="SRS keys not loaded", temporary=True)
    keys = ring.verifying(ctx.now, settings.key_grace)
    result = reverse(
        parsed,
        (k.secret for k in keys),
        ctx.now,
        max_age=settings.max_age_days,
        min_hash_length=settings.hash_length,
    )
    if isinstance(result, SrsError):
        # Another gateway may sign with a key we have not seen yet.
        stale = result.problem in (SrsProblem.HASH, SrsProblem.NO_KEY)
        if stale and not ring.is_current(ctx.now):
            return SrsCheck(
                parsed.kind, problem=f"{result}; SRS keys may be out of date", temporary=True
            )
        return SrsCheck(parsed.kind, problem=str(result))
    target = parse_path(_address_text(*result), smtputf8=True)
    if not isinstance(target, Address) or not target.is_qualified:
        return SrsCheck(parsed.kind, problem="it stands for no valid address")
    return SrsCheck(parsed.kind, target)


def reverse_recipient(
    ctx: SrsContext, address: Address, shown: str, trace: list[str] | None
) -> Address | Reply | None:
    """At RCPT: the address an SRS recipient of ours stands for, or the
    refusal (550 5.1.1; 451 4.3.0 when temporary); None when ``address`` is
    not an SRS address at one of our SRS domains."""
    check = check_address(ctx, address)
    if check is None:
        return None
    if trace is not None:
        what = check.kind.value if check.kind is not None else "SRS"
        trace.append(f"{address.domain} is our SRS domain: checking the {what} address")
    if check.target is not None:
        if trace is not None:
            where = "the first forwarder" if check.kind is SrsKind.SRS1 else "the original sender"
            trace.append(f"SRS address verified: it goes back to {where} <{check.target}>")
        return check.target
    if trace is not None:
        trace.append(f"SRS check failed: {check.problem}")
    if check.temporary:
        return Reply(451, "4.3.0", f"<{shown}>: Temporary lookup failure: {check.problem}")
    return Reply(
        550, "5.1.1", f"<{shown}>: Recipient address rejected: invalid SRS address: {check.problem}"
    )


def mark_forwards(
    ctx: SrsContext,
    data: RoutingData,
    decision: RecipientDecision,
    sender: str,
    alias_domain: str,
) -> RecipientDecision:
    """The decision for a recipient of one of our domains, with ``srs`` set on
    the deliveries outside our domains: those were reached through a forward.
    ``explain`` also gets the rewrite of ``sender`` in the trace."""
    marked: list[Delivery] | None = None
    for n, delivery in enumerate(decision.deliveries):
        if _domain_of(delivery.recipient) in data.domains:
            continue
        if marked is None:
            marked = list(decision.deliveries)
        marked[n] = replace(delivery, srs=True)
    if marked is None:
        return decision
    if not decision.trace:  # not explaining
        return replace(decision, deliveries=tuple(marked))
    notes = [
        f"srs: {d.recipient} is outside our domains, reached through a forward: "
        + _describe(ctx, sender, alias_domain)
        for d in marked
        if d.srs
    ]
    trace = decision.trace
    if trace[-1].startswith("reply: "):  # the reply stays the last line
        return replace(decision, deliveries=tuple(marked), trace=(*trace[:-1], *notes, trace[-1]))
    return replace(decision, deliveries=tuple(marked), trace=(*trace, *notes))


def _describe(ctx: SrsContext, sender: str, alias_domain: str) -> str:
    srs_domain = ctx.settings.domain_for(alias_domain)
    if not sender:
        return f"a sender is rewritten into {srs_domain} (the null sender <> never is)"
    rewrite = rewrite_sender(ctx, sender, alias_domain)
    if rewrite.rewritten:
        return f"sender <{sender}> rewritten to <{rewrite.sender}> ({rewrite.reason})"
    return f"sender <{sender}> not rewritten: {rewrite.reason}"


def rewrite_sender(ctx: SrsContext, sender: str, alias_domain: str) -> SenderRewrite:
    """The SRS form of ``sender`` for a copy forwarded on behalf of a
    recipient in ``alias_domain`` (which picks the SRS domain)."""
    if not sender:
        return SenderRewrite("", False, "the null sender is never rewritten")
    parsed = parse_path(sender, smtputf8=True)
    if not isinstance(parsed, Address) or not parsed.is_qualified or parsed.source_route:
        return SenderRewrite(sender, False, "not a qualified address")
    settings = ctx.settings
    if settings.is_ours(parsed.domain):
        return SenderRewrite(sender, False, f"already at our SRS domain {parsed.domain}")
    key = ctx.ring.signing_key(ctx.now)
    if key is None:
        if not ctx.ring.loaded:
            return SenderRewrite(sender, False, "SRS keys not loaded yet", True, temporary=True)
        why = "no SRS key that can sign (mxgate db migrate, mxgate srs rotate)"
        return SenderRewrite(sender, False, why, no_key=True)
    local = forward(
        unquote_local(parsed.local), parsed.domain, key.secret, ctx.now, settings.hash_length
    )
    srs_domain = settings.domain_for(alias_domain)
    text = _address_text(local, srs_domain)
    if _octets(text) - _octets(srs_domain) - 1 > MAX_LOCAL_PART:
        # RFC 5321 4.5.3.1.1: we would refuse the bounces ourselves.
        return SenderRewrite(sender, False, f"the SRS local part would exceed {MAX_LOCAL_PART}")
    return SenderRewrite(text, True, f"key {key.id}, SRS domain {srs_domain}")


def sender_for_copy(
    ctx: SrsContext, data: RoutingData, sender: str, recipient: Recipient
) -> SenderRewrite | None:
    """The sender of the copy for ``recipient``; None when it is not a
    forward to the outside (unmarked at RCPT, or its domain is ours by now)."""
    if recipient.route.get(ROUTE_FLAG) is not True:
        return None
    if _domain_of(recipient.address) in data.domains:
        return None
    return rewrite_sender(ctx, sender, _domain_of(recipient.original))
