"""Forward expansion (Postfix's virtual alias expansion) of one recipient.

Owns SPEC section 4: the lookup order for one address in our domains
(mailbox or exact relay to itself; exact forward rows; the same for the
address without its extension, the extension carried over; forward catch-all;
relay catch-all to itself; then the configured postmaster for a
``postmaster@`` nobody claims), the "known" rule of section 3, the recursion
and fan-out limits, loop detection, dead ends and de-duplication of final
recipients, and the tree of steps that ``mxgate explain`` prints (recorded
only when asked for: ``explain=True``; the rest of the result is the same).

Never routes (transport.py does), never chooses a reply (policy.py does),
never does I/O, and never recurses on the Python stack: a limit of 1000
nested forwards would overflow it, so the walk keeps its own stack.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from functools import lru_cache

from mxgate.core.address import Address, parse_path, split_extension
from mxgate.core.snapshot import RoutingData

# The rule of a final recipient that a forward row maps to itself (SPEC
# section 4: "an address that maps to itself stays").
STAYS = "maps to itself: stays"
LOOP_STATUS = "5.4.6"  # RFC 3463 X.4.6 routing loop detected; also used for limits
UNKNOWN_STATUS = "5.1.1"  # RFC 3463 X.1.1 bad destination mailbox address


class LookupKind(enum.Enum):
    SELF = "self"  # maps to itself: a final recipient
    FORWARD = "forward"  # replaced by its targets
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, init=False)
class Lookup:
    """What one address in our domains maps to, and the row that said so."""

    kind: LookupKind
    rule: str
    targets: tuple[str, ...] = ()
    extension: str = ""  # appended to each target's local part (step 3)

    def __init__(
        self, kind: LookupKind, rule: str, targets: tuple[str, ...] = (), extension: str = ""
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "extension", extension)


class FailureKind(enum.Enum):
    LOOP = "loop"
    RECURSION_LIMIT = "recursion limit"
    EXPANSION_LIMIT = "expansion limit"
    DEAD_END = "dead end"

    @property
    def enhanced(self) -> str:
        return UNKNOWN_STATUS if self is FailureKind.DEAD_END else LOOP_STATUS


@dataclass(frozen=True, slots=True, init=False)
class Final:
    """A final recipient: ``recipient`` is its canonical text (lower-case in
    our domains; outside them the local part as the row wrote it)."""

    address: Address
    recipient: str
    rule: str
    ours: bool

    def __init__(self, address: Address, recipient: str, rule: str, ours: bool) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "recipient", recipient)
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "ours", ours)


@dataclass(frozen=True, slots=True)
class Failure:
    """A part of the expansion that reaches nothing: bounced, or the reason
    for refusing the whole recipient when nothing else is deliverable."""

    recipient: str
    kind: FailureKind
    reason: str

    @property
    def enhanced(self) -> str:
        return self.kind.enhanced


@dataclass(frozen=True, slots=True)
class Step:
    """One node of the expansion tree, in depth-first order."""

    depth: int
    address: str
    note: str


@dataclass(frozen=True, slots=True, init=False)
class Expansion:
    """The result; ``steps`` is empty unless the expansion was explained."""

    known: bool
    finals: tuple[Final, ...]
    failures: tuple[Failure, ...]
    steps: tuple[Step, ...]

    def __init__(
        self,
        known: bool,
        finals: tuple[Final, ...],
        failures: tuple[Failure, ...],
        steps: tuple[Step, ...],
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "known", known)
        object.__setattr__(self, "finals", finals)
        object.__setattr__(self, "failures", failures)
        object.__setattr__(self, "steps", steps)


_SEPARATORS = re.compile(r"[\s,]+")
# A destination column that is one address: nothing to split, nothing quoted.
_ONE_DESTINATION = re.compile(r'[^\s,"]+')


def split_destinations(column: str) -> list[str]:
    """One ``forward.destination`` value as addresses: commas and blanks
    separate, except inside a quoted local part; empty items vanish."""
    if '"' not in column:
        return [t for t in _SEPARATORS.split(column) if t]
    tokens: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for c in column:
        if quoted:
            buf.append(c)
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
            buf.append(c)
        elif c == "," or c.isspace():
            if buf:
                tokens.append("".join(buf))
                buf = []
        else:
            buf.append(c)
    if buf:
        tokens.append("".join(buf))
    return tokens


def forward_targets(rows: tuple[str, ...]) -> tuple[str, ...]:
    """All destinations of a source's forward rows, in order, each once."""
    if len(rows) == 1 and _ONE_DESTINATION.fullmatch(rows[0]):
        # The common case: one row naming one address. Seeing that costs less
        # than a look-up in the cache below (whose entries are cold, spread
        # over the heap, when there are many forwards).
        return rows
    return _split_rows(rows)


@lru_cache(maxsize=65536)
def _split_rows(rows: tuple[str, ...]) -> tuple[str, ...]:
    """Pure, so cached: a catch-all's rows are split once, not per message."""
    seen: dict[str, None] = {}
    for column in rows:
        for token in split_destinations(column):
            seen.setdefault(token, None)
    return tuple(seen)


def lookup_recipient(
    data: RoutingData, address: Address, delimiter: str, postmaster: str
) -> Lookup:
    """SPEC section 4 steps 1-5 for one address of one of our domains, then
    the postmaster rule of section 3 (``postmaster`` '' disables it)."""
    key = address.key
    if key in data.mailboxes:
        return Lookup(LookupKind.SELF, f"mailbox row {key} matched")
    if key in data.relays:
        return Lookup(LookupKind.SELF, f"relay row {key} matched")
    rows = data.forwards.get(key)
    if rows is not None and (targets := forward_targets(rows)):
        return Lookup(LookupKind.FORWARD, f"forward {key}", targets)
    domain = address.domain
    split = None if address.quoted else split_extension(address.local, delimiter)
    if split is not None:
        # Step 3: user@domain for user+ext@domain, before any catch-all (the
        # tutorial let the catch-all win, SPEC section 9).
        base, ext = f"{split[0].lower()}@{domain}", split[1]
        if base in data.mailboxes:
            return Lookup(LookupKind.SELF, f"mailbox row {base} matched (extension {ext} kept)")
        if base in data.relays:
            return Lookup(LookupKind.SELF, f"relay row {base} matched (extension {ext} kept)")
        rows = data.forwards.get(base)
        if rows is not None and (targets := forward_targets(rows)):
            return Lookup(
                LookupKind.FORWARD, f"forward {base} (extension {ext} propagated)", targets, ext
            )
    if not address.routing_chars:
        # A catch-all never takes an address with @ % ! in its local part.
        catch_all = f"@{domain}"
        rows = data.forwards.get(catch_all)
        if rows is not None and (targets := forward_targets(rows)):
            return Lookup(LookupKind.FORWARD, f"forward {catch_all} (catch-all)", targets)
        if catch_all in data.relays:
            return Lookup(LookupKind.SELF, f"relay {catch_all} matched (catch-all)")
        if postmaster and address.local.lower() == "postmaster":
            return Lookup(
                LookupKind.FORWARD,
                f"no row for {key}: the configured postmaster (RFC 5321 4.5.1)",
                (postmaster,),
            )
    return Lookup(LookupKind.UNKNOWN, f"no row for {key}")


def taken_as_itself(data: RoutingData, address: Address, delimiter: str) -> bool:
    """Whether a row other than a forward takes ``address`` as it is: a
    mailbox or relay row for it (or for it without its extension), or a relay
    catch-all of its domain. A forward that maps an address to itself
    without one of these hands it to a next hop that has no mailbox for it."""
    key = address.key
    if key in data.mailboxes or key in data.relays:
        return True
    split = None if address.quoted else split_extension(address.local, delimiter)
    if split is not None:
        base = f"{split[0].lower()}@{address.domain}"
        if base in data.mailboxes or base in data.relays:
            return True
    return not address.routing_chars and f"@{address.domain}" in data.relays


def is_known(data: RoutingData, address: Address, delimiter: str) -> bool:
    """SPEC section 3: a mailbox, a relay, a forward with a non-empty
    destination, or covered by a forward or relay catch-all (after the
    extension is stripped, as relay_recipient_maps lookups do)."""
    return lookup_recipient(data, address, delimiter, "").kind is not LookupKind.UNKNOWN


# Work items of the explicit stack: (tag, depth, address, token, reason).
_VISIT, _EXIT, _SELF, _INVALID = range(4)
_Item = tuple[int, int, Address | None, str, str]


class _Expander:
    def __init__(
        self,
        data: RoutingData,
        delimiter: str,
        postmaster: str,
        recursion: int,
        fanout: int,
        explain: bool,
    ) -> None:
        self.data = data
        self.delimiter = delimiter
        self.postmaster = postmaster
        self.recursion = recursion
        self.fanout = fanout
        self.known = True
        self.finals: dict[str, Final] = {}
        self.failures: list[Failure] = []
        # The tree for explain, or None: its notes are then never formatted.
        self.steps: list[Step] | None = [] if explain else None
        self.path: dict[str, bool] = {}  # keys being expanded -> maps to itself
        self.done: set[str] = set()
        # Addresses in the result list, counted as Postfix's cleanup_map1n
        # counts them against virtual_alias_expansion_limit.
        self.count = 1

    def run(self, stack: list[_Item]) -> Expansion:
        while stack:
            tag, depth, address, token, reason = stack.pop()
            if tag == _EXIT:
                del self.path[token]
                self.done.add(token)
            elif tag == _INVALID:
                self.fail(depth, token, FailureKind.DEAD_END, reason)
            elif address is not None and tag == _SELF:
                self.final(depth, address, STAYS, True)
            elif address is not None:
                self.visit(address, depth, stack)
        steps = tuple(self.steps) if self.steps is not None else ()
        return Expansion(self.known, tuple(self.finals.values()), tuple(self.failures), steps)

    def note(self, depth: int, address: str, note: str) -> None:
        """Record a step whose note is at hand; callers that would have to
        format one check ``self.steps`` first."""
        if self.steps is not None:
            self.steps.append(Step(depth, address, note))

    def fail(self, depth: int, recipient: str, kind: FailureKind, reason: str) -> None:
        self.failures.append(Failure(recipient, kind, reason))
        if self.steps is not None:
            self.steps.append(Step(depth, recipient, f"{kind.value}: {reason}"))

    def final(self, depth: int, address: Address, rule: str, ours: bool) -> None:
        final = _final(address, rule, ours)
        if final.recipient in self.finals:
            self.note(depth, final.recipient, "duplicate final recipient: dropped")
            return
        self.finals[final.recipient] = final
        self.note(depth, final.recipient, rule)

    def visit(
        self, address: Address, depth: int, stack: list[_Item], lookup: Lookup | None = None
    ) -> None:
        key = address.key
        if address.domain not in self.data.domains:
            if depth > self.recursion:
                self.fail(depth, str(address), FailureKind.RECURSION_LIMIT, self._deep())
            else:
                self.final(depth, address, _OUTSIDE, False)
            return
        if key in self.path:
            if self.path[key]:
                self.note(depth, key, "already final above (maps to itself)")
            else:
                keys = list(self.path)
                chain = " -> ".join([*keys[keys.index(key) :], key])
                self.fail(depth, key, FailureKind.LOOP, f"mail forwarding loop: {chain}")
            return
        if key in self.done:
            self.note(depth, key, "already expanded above")
            return
        if depth > self.recursion:
            self.fail(depth, key, FailureKind.RECURSION_LIMIT, self._deep())
            return
        if lookup is None:
            lookup = lookup_recipient(self.data, address, self.delimiter, self.postmaster)
        if lookup.kind is LookupKind.SELF:
            self.final(depth, address, lookup.rule, True)
            return
        if lookup.kind is LookupKind.UNKNOWN:
            if depth == 0:
                self.known = False
                if self.steps is not None:
                    self.steps.append(Step(depth, key, f"unknown: {lookup.rule}"))
            else:
                reason = f"forward target {key} is unknown ({lookup.rule})"
                self.fail(depth, key, FailureKind.DEAD_END, reason)
            return
        added = len(lookup.targets) - 1
        if self.count + added > self.fanout:
            reason = f"more than {self.fanout} addresses (virtual_alias_expansion_limit)"
            self.fail(depth, key, FailureKind.EXPANSION_LIMIT, reason)
            return
        self.count += added
        if self.steps is not None:
            self.steps.append(Step(depth, key, f"{lookup.rule} -> {', '.join(lookup.targets)}"))
        self.push_targets(key, depth, lookup.targets, lookup.extension, stack)

    def push_targets(
        self, key: str, depth: int, tokens: tuple[str, ...], ext: str, stack: list[_Item]
    ) -> None:
        items: list[_Item] = []
        maps_to_itself = False
        for token in tokens:
            target = _target(token, ext)
            if isinstance(target, str):
                items.append((_INVALID, depth + 1, None, token, target))
            elif target.key == key:
                maps_to_itself = True
                items.append((_SELF, depth + 1, target, "", ""))
            else:
                items.append((_VISIT, depth + 1, target, "", ""))
        if key:
            self.path[key] = maps_to_itself
            stack.append((_EXIT, depth, None, key, ""))
        stack.extend(reversed(items))

    def _deep(self) -> str:
        return f"more than {self.recursion} nested forwards (virtual_alias_recursion_limit)"


def _final(address: Address, rule: str, ours: bool) -> Final:
    if not ours:
        return Final(address, str(address), rule, False)
    if address.local != address.local.lower():
        address = replace(address, local=address.local.lower())
    return Final(address, address.key, rule, True)


_OUTSIDE = "not one of our domains: final"


def _one_hop(
    data: RoutingData,
    key: str,
    lookup: Lookup,
    delimiter: str,
    postmaster: str,
    recursion: int,
    fanout: int,
) -> tuple[Final, ...] | None:
    """The final recipients of the common forward, without the walker: every
    target is final at once (outside our domains, or a mailbox or relay of
    ours), none is the forwarded address itself, and no limit is reached.
    The walker would give the same finals, no failure and ``known``. None
    when any of that does not hold: the walker then does the general case."""
    if recursion < 1 or len(lookup.targets) > fanout:
        return None
    finals: dict[str, Final] = {}
    for token in lookup.targets:
        target = _target(token, lookup.extension)
        if isinstance(target, str) or target.key == key:
            return None
        if target.domain not in data.domains:
            final = _final(target, _OUTSIDE, False)
        else:
            found = lookup_recipient(data, target, delimiter, postmaster)
            if found.kind is not LookupKind.SELF:
                return None
            final = _final(target, found.rule, True)
        finals.setdefault(final.recipient, final)  # a duplicate is dropped
    return tuple(finals.values())


@lru_cache(maxsize=65536)
def _target(token: str, extension: str) -> Address | str:
    """A forward destination as an address, with the extension propagated
    (Postfix propagate_unmatched_extensions), or the reason it is unusable."""
    parsed = parse_path(token, smtputf8=True)
    if not isinstance(parsed, Address):
        return f"forward destination {token!r} is not a valid address ({parsed.detail})"
    if not parsed.is_qualified or parsed.has_source_route:
        return f"forward destination {token!r} is not a fully-qualified address"
    if extension and not parsed.quoted:
        extended = parse_path(f"{parsed.local}{extension}@{parsed.domain}", smtputf8=True)
        if isinstance(extended, Address):
            return extended
    return parsed


def expand(
    data: RoutingData,
    address: Address,
    *,
    delimiter: str,
    postmaster: str,
    recursion_limit: int,
    expansion_limit: int,
    explain: bool = False,
) -> Expansion:
    """Expand one recipient (of our domains or not) to its final recipients;
    ``explain`` also records the tree of steps."""
    if address.domain in data.domains:
        # The common case, a mailbox or relay, without building the walker.
        lookup = lookup_recipient(data, address, delimiter, postmaster)
        if lookup.kind is LookupKind.SELF:
            final = _final(address, lookup.rule, True)
            steps = (Step(0, final.recipient, lookup.rule),) if explain else ()
            return Expansion(True, (final,), (), steps)
        if lookup.kind is LookupKind.FORWARD and not explain:
            finals = _one_hop(
                data, address.key, lookup, delimiter, postmaster, recursion_limit, expansion_limit
            )
            if finals is not None:
                return Expansion(True, finals, (), ())
        walker = _Expander(data, delimiter, postmaster, recursion_limit, expansion_limit, explain)
        stack: list[_Item] = []
        walker.visit(address, 0, stack, lookup)
        return walker.run(stack)
    walker = _Expander(data, delimiter, postmaster, recursion_limit, expansion_limit, explain)
    return walker.run([(_VISIT, 0, address, "", "")])


def expand_to(
    data: RoutingData,
    label: str,
    rule: str,
    targets: tuple[str, ...],
    *,
    delimiter: str,
    postmaster: str,
    recursion_limit: int,
    expansion_limit: int,
    explain: bool = False,
) -> Expansion:
    """Expand a recipient that a policy rule (not a row) maps to ``targets``:
    ``postmaster``, ``postmaster@myhostname``, ``postmaster@[our address]``."""
    walker = _Expander(data, delimiter, postmaster, recursion_limit, expansion_limit, explain)
    if walker.steps is not None:
        walker.steps.append(Step(0, label, f"{rule} -> {', '.join(targets)}"))
    stack: list[_Item] = []
    walker.push_targets("", 0, targets, "", stack)
    return walker.run(stack)
