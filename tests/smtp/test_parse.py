"""Command-line grammar: MAIL/RCPT paths and ESMTP parameters (RFC 5321
4.1.2, RFC 1870, RFC 6152, RFC 6531, RFC 3461), as pure table tests."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.smtp import MailFrom, RcptTo, RemoteProtocolError
from mxgate.smtp.parse import Verb, decode_xtext, parse_command, parse_mail, parse_rcpt


def mail(line: str) -> MailFrom:
    return parse_mail(parse_command(line.encode() + b"\r\n"))


def rcpt(line: str) -> RcptTo:
    return parse_rcpt(parse_command(line.encode() + b"\r\n"))


def refusal(line: str) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        cmd = parse_command(line.encode() + b"\r\n")
        if cmd.verb is Verb.MAIL:
            parse_mail(cmd)
        else:
            parse_rcpt(cmd)
    return info.value.reply.line()


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("MAIL FROM:<alice@example.org>", "alice@example.org"),
        ("mail from:<alice@example.org>", "alice@example.org"),
        ("MAIL FROM: <alice@example.org>", "alice@example.org"),  # Postfix tolerates
        ("MAIL FROM:alice@example.org", "alice@example.org"),  # ... and this
        ("MAIL  FROM:<alice@example.org>  ", "alice@example.org"),
        ("MAIL FROM:<>", ""),
        ('MAIL FROM:<"john doe"@example.org>', '"john doe"@example.org'),
        ('MAIL FROM:<"a>b"@example.org>', '"a>b"@example.org'),
        ('MAIL FROM:<"a\\"b"@example.org>', '"a\\"b"@example.org'),
        (
            "MAIL FROM:<@relay.example,@b.example:alice@example.org>",
            "@relay.example,@b.example:alice@example.org",
        ),
        ("MAIL FROM:<alice@[192.0.2.1]>", "alice@[192.0.2.1]"),
    ],
)
def test_mail_paths(line: str, address: str) -> None:
    assert mail(line) == MailFrom(address)


def test_mail_parameters() -> None:
    event = mail(
        "MAIL FROM:<jöhn@example.org> SIZE=12345 body=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B123"
    )
    assert event == MailFrom(
        "jöhn@example.org",
        {"SIZE": "12345", "BODY": "8bitmime", "SMTPUTF8": None, "RET": "hdrs", "ENVID": "QQ+2B123"},
        size=12345,
        body="8BITMIME",
        smtputf8=True,
        ret="HDRS",
        envid="QQ+123",
    )
    assert mail("MAIL FROM:a@b BODY=7BIT RET=FULL").body == "7BIT"
    assert mail("MAIL FROM:a@b BODY=7BIT RET=FULL").ret == "FULL"
    assert mail("MAIL FROM:<a@b>\tSIZE=0").size == 0


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("MAIL TO:<a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL FROM:<a@b", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<a@b>x", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<a b@c>", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<a<b@c>", "501 5.1.7 Bad sender address syntax"),
        ('MAIL FROM:<"unterminated@c>', "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<a\x01b@c>", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:a>b@c", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<" + "a" * 252 + "@bc>", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<a@b> FOO=bar", "555 5.5.4 Unsupported option: FOO=bar"),
        ("MAIL FROM:<a@b> NOTIFY=NEVER", "555 5.5.4 Unsupported option: NOTIFY=NEVER"),
        ("MAIL FROM:<a@b> AUTH=<>", "555 5.5.4 Unsupported option: AUTH=<>"),
        ("MAIL FROM:<a@b> BODY=BINARYMIME", "555 5.5.4 Unsupported option: BODY=BINARYMIME"),
        ("MAIL FROM:<a@b> BODY", "501 5.5.4 Bad BODY parameter syntax"),
        ("MAIL FROM:<a@b> SIZE", "501 5.5.4 Bad message size syntax"),
        ("MAIL FROM:<a@b> SIZE=1k", "501 5.5.4 Bad message size syntax"),
        ("MAIL FROM:<a@b> SIZE=-1", "501 5.5.4 Bad message size syntax"),
        ("MAIL FROM:<a@b> SIZE=²", "501 5.5.4 Bad message size syntax"),
        ("MAIL FROM:<a@b> SIZE=" + "9" * 21, "501 5.5.4 Bad message size syntax"),
        ("MAIL FROM:<a@b> SIZE=1 SIZE=2", "501 5.5.4 Error: duplicate parameter"),
        ("MAIL FROM:<a@b> SMTPUTF8=yes", "501 5.5.4 Bad SMTPUTF8 parameter syntax"),
        ("MAIL FROM:<a@b> RET=ALL", "501 5.5.4 Bad RET parameter syntax"),
        ("MAIL FROM:<a@b> RET", "501 5.5.4 Bad RET parameter syntax"),
        ("MAIL FROM:<a@b> ENVID=a+ZZ", "501 5.5.4 Bad ENVID parameter syntax"),
        ("MAIL FROM:<a@b> ENVID=a+0D+0Ab", "501 5.5.4 Bad ENVID parameter syntax"),
        ("MAIL FROM:<a@b> ENVID=" + "x" * 101, "501 5.5.4 Bad ENVID parameter syntax"),
        ("MAIL FROM:<a@b> ENVID=" + "+3D" * 101, "501 5.5.4 Bad ENVID parameter syntax"),
        (
            "MAIL FROM:<a@b> FOO=" + "y" * 2020,
            "555 5.5.4 Unsupported option: FOO=" + "y" * 60 + "...",
        ),
        ("MAIL FROM:<a@b> FOO=é", "555 5.5.4 Unsupported option: FOO=?"),
        ("MAIL FROM:<a@b> =x", "501 5.5.4 Error: bad parameter syntax"),
        ("MAIL FROM:<a@b> -X=1", "501 5.5.4 Error: bad parameter syntax"),
        ("MAIL FROM:<a@b> SIZE=", "501 5.5.4 Error: bad parameter syntax"),
        ("MAIL FROM:<a@b> X=a=b", "501 5.5.4 Error: bad parameter syntax"),
    ],
)
def test_mail_refusals(line: str, reply: str) -> None:
    assert refusal(line) == reply


def test_rcpt() -> None:
    assert rcpt("RCPT TO:<bob@example.com>") == RcptTo("bob@example.com")
    assert rcpt("rcpt to: postmaster") == RcptTo("postmaster")
    assert rcpt("RCPT TO:<Postmaster>").address == "Postmaster"
    event = rcpt("RCPT TO:<bob@example.com> NOTIFY=success,Delay ORCPT=rfc822;bob+2Bx@example.com")
    assert event.notify == ("SUCCESS", "DELAY")
    assert event.orcpt == "rfc822;bob+x@example.com"
    assert event.params == {"NOTIFY": "success,Delay", "ORCPT": "rfc822;bob+2Bx@example.com"}
    assert rcpt("RCPT TO:<b@c> NOTIFY=never").notify == ("NEVER",)
    assert rcpt("RCPT TO:<b@c> ORCPT=utf-8;b\\x{E9}@c").orcpt == "utf-8;b\\x{E9}@c"
    # RFC 3461 limits the text before xtext encoding: 500 and 100 characters.
    assert rcpt("RCPT TO:<b@c> ORCPT=rfc822;" + "+41" * 500).orcpt == "rfc822;" + "A" * 500
    assert mail("MAIL FROM:<a@b> ENVID=" + "+3D" * 100).envid == "=" * 100


def rcpt8(line: str) -> RcptTo:
    return parse_rcpt(parse_command(line.encode() + b"\r\n"), smtputf8=True)


def test_orcpt_utf8_address_sent_as_utf8_in_an_smtputf8_transaction() -> None:
    # RFC 6533 3: with SMTPUTF8 the utf-8 address may travel as UTF-8
    # (utf-8-addr-unitext); it is kept in the ASCII form (utf-8-addr-xtext)
    # that DSNs and next hops without SMTPUTF8 take.
    assert rcpt8("RCPT TO:<b@c> ORCPT=utf-8;j\u00f6s\u00e9@d").orcpt == "utf-8;j\\x{F6}s\\x{E9}@d"
    assert rcpt8("RCPT TO:<b@c> ORCPT=UTF-8;\u00e9\u6f22@d").orcpt == "utf-8;\\x{E9}\\x{6F22}@d"
    # Raw UTF-8, embedded \x{..} and xtext mixed: one canonical form.
    mixed = rcpt8("RCPT TO:<b@c> ORCPT=utf-8;j\\x{F6}s\u00e9+2Bx\\x{3D}y@d").orcpt
    assert mixed == "utf-8;j\\x{F6}s\\x{E9}\\x{2B}x\\x{3D}y@d"
    # An ASCII value is taken as before, SMTPUTF8 or not.
    assert rcpt8("RCPT TO:<b@c> ORCPT=utf-8;b\\x{E9}@c").orcpt == "utf-8;b\\x{E9}@c"
    # The limit counts the address's characters, not the octets of its escapes.
    assert rcpt8("RCPT TO:<b@c> ORCPT=utf-8;" + "\u00e9" * 498 + "@d").orcpt is not None


@pytest.mark.parametrize(
    ("line", "smtputf8"),
    [
        ("RCPT TO:<b@c> ORCPT=utf-8;j\u00f6s@d", False),  # raw UTF-8 needs SMTPUTF8
        ("RCPT TO:<b@c> ORCPT=rfc822;j\u00f6s@d", True),  # an rfc822 address is ASCII
        ("RCPT TO:<b@c> ORCPT=utf-8;" + "\u00e9" * 499 + "@d", True),  # 501 characters
        ("RCPT TO:<b@c> ORCPT=utf-8;\u00e9\\x{1B}@d", True),  # a control character
        ("RCPT TO:<b@c> ORCPT=utf-8;\u00e9+1B@d", True),
        ("RCPT TO:<b@c> ORCPT=utf-8;\u00e9+2@d", True),  # broken xtext
    ],
)
def test_orcpt_utf8_refusals(line: str, smtputf8: bool) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_rcpt(parse_command(line.encode() + b"\r\n"), smtputf8=smtputf8)
    assert info.value.reply.line() == "501 5.5.4 Bad ORCPT parameter syntax"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("RCPT FROM:<b@c>", "501 5.5.4 Syntax: RCPT TO:<address>"),
        ("RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
        ("RCPT TO:<b@c", "501 5.1.3 Bad recipient address syntax"),
        ("RCPT TO:<b@c> NOTIFY=NEVER,SUCCESS", "501 5.5.4 Bad NOTIFY parameter syntax"),
        ("RCPT TO:<b@c> NOTIFY=SUCCESS,SUCCESS", "501 5.5.4 Bad NOTIFY parameter syntax"),
        ("RCPT TO:<b@c> NOTIFY=SOMETIMES", "501 5.5.4 Bad NOTIFY parameter syntax"),
        ("RCPT TO:<b@c> NOTIFY=SUCCESS,", "501 5.5.4 Bad NOTIFY parameter syntax"),
        ("RCPT TO:<b@c> NOTIFY", "501 5.5.4 Bad NOTIFY parameter syntax"),
        ("RCPT TO:<b@c> ORCPT=rfc822", "501 5.5.4 Bad ORCPT parameter syntax"),
        ("RCPT TO:<b@c> ORCPT=;b@c", "501 5.5.4 Bad ORCPT parameter syntax"),
        ("RCPT TO:<b@c> ORCPT=rfc822;", "501 5.5.4 Bad ORCPT parameter syntax"),
        ("RCPT TO:<b@c> ORCPT=rfc822;a+2", "501 5.5.4 Bad ORCPT parameter syntax"),
        ("RCPT TO:<b@c> ORCPT=rfc822;" + "a" * 501, "501 5.5.4 Bad ORCPT parameter syntax"),
        ("RCPT TO:<b@c> ORCPT=rfc822;" + "+41" * 501, "501 5.5.4 Bad ORCPT parameter syntax"),
        ("RCPT TO:<b@c> SIZE=10", "555 5.5.4 Unsupported option: SIZE=10"),
    ],
)
def test_rcpt_refusals(line: str, reply: str) -> None:
    assert refusal(line) == reply


@pytest.mark.parametrize(
    ("text", "decoded"),
    [("", ""), ("abc", "abc"), ("a+2Bb", "a+b"), ("+3D", "="), ("a+20b", "a b"), ("x+2b", "x+")],
)
def test_xtext(text: str, decoded: str) -> None:
    assert decode_xtext(text) == decoded


@pytest.mark.parametrize("text", ["a=b", "a b", "+", "+2", "+GG", "é", "+00", "+7F"])
def test_bad_xtext(text: str) -> None:
    with pytest.raises(ValueError):
        decode_xtext(text)


def test_verbs_are_case_insensitive() -> None:
    assert parse_command(b"eHlO x\r\n").verb is Verb.EHLO
    assert parse_command(b"StartTLS\r\n").verb is Verb.STARTTLS
    assert parse_command(b"post / HTTP/1.0\r\n").verb is Verb.FORBIDDEN
    unknown = parse_command(b"X" * 100 + b"\r\n")
    assert (unknown.verb, len(unknown.name)) == (Verb.UNKNOWN, 32)


# The path's grammar as RFC 5321 4.1.2 writes it (plain characters, or quoted
# strings with quoted-pairs), with ordinary backtracking quantifiers: the
# language the parser's faster, possessive pattern must accept, no more, no less.
_PATH_DEFINITION = re.compile(
    r'<((?:[^\x00-\x20"<>\x7f]|"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*")*)>'
)
# What paths are made of: plain, quoting, escaping, blank, control and
# bracket characters, and non-ASCII.
_PATH_PIECES = st.sampled_from(
    ["a", ".", "@", '"', "\\", " ", "\t", "\x01", "\x7f", "<", ">", "é", '\\"', "x\\"]
)


@given(st.lists(_PATH_PIECES, max_size=24).map("".join), st.sampled_from(["", " SIZE=1", "x"]))
def test_paths_take_exactly_the_rfc_5321_path_grammar(inner: str, tail: str) -> None:
    line = f"MAIL FROM:<{inner}>{tail}"
    defined = _PATH_DEFINITION.match(line, len("MAIL FROM:"))
    after = line[defined.end() :] if defined else ""
    bad_path = "501 5.1.7 Bad sender address syntax"
    if defined is None or (after and after[0] not in " \t"):
        assert refusal(line) == bad_path
    elif not after.strip(" \t") or after == " SIZE=1":
        assert mail(line).address == defined.group(1)
    else:  # a path, then parameters that may be nonsense ("> x", "b>")
        try:
            assert mail(line).address == defined.group(1)
        except RemoteProtocolError as err:
            assert err.reply.line() != bad_path
