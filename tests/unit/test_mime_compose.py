"""Composing outgoing messages (mailcore.protocols.compose), read back with mime.py."""

from __future__ import annotations

import email
import hashlib
import os
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from email import policy

import pytest

from mailcore.protocols.compose import (
    Address,
    AddressError,
    Draft,
    HeaderInjection,
    OutgoingAttachment,
    build_message,
    build_utf8_message,
    envelope_address,
    envelope_recipients,
    forward_subject,
    guess_content_type,
    html_to_text,
    needs_smtputf8,
    parse_addresses,
    quote_text,
    reply_subject,
)
from mailcore.protocols.mime import parse_message, part_bytes

ALICE = Address("Alice", "alice@example.org")
BOB = Address("Bob", "bob@example.org")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def draft(**fields) -> Draft:
    values = {"sender": ALICE, "to": [BOB], "subject": "Hello", "text": "Hi Bob.\n"}
    values.update(fields)
    return Draft(**values)


def build(**fields) -> bytes:
    return build_message(draft(**fields), domain="example.org")[0]


def structure(raw: bytes) -> list:
    """The MIME tree as nested [content type, children...] lists."""

    def walk(part):
        if part.is_multipart() and part.get_content_maintype() == "multipart":
            return [part.get_content_type(), *[walk(child) for child in part.get_payload()]]
        return part.get_content_type()

    return walk(email.message_from_bytes(raw, policy=policy.default))


def headers(raw: bytes) -> str:
    return raw[: raw.index(b"\r\n\r\n")].decode("ascii")


def assert_7bit(raw: bytes) -> None:
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


# --------------------------------------------------------------------------- structure


def test_text_only_is_one_text_part_with_the_usual_headers():
    raw, message_id = build_message(draft(), domain="example.org")
    assert structure(raw) == "text/plain"
    head = headers(raw)
    for name in ["Date", "From", "To", "Subject", "Message-ID", "MIME-Version"]:
        assert re.search(f"^{name}: ", head, re.M), name
    assert message_id.startswith("<") and message_id.endswith("@example.org>")
    parsed = parse_message(raw)
    assert (parsed.sender, parsed.to, parsed.subject) == (ALICE, (BOB,), "Hello")
    assert parsed.text == "Hi Bob.\n"
    assert parsed.message_id == message_id
    assert_7bit(raw)


def test_text_and_html_are_alternatives():
    raw = build(text="Plain *bold*\n", html="<p>Plain <b>bold</b></p>")
    assert structure(raw) == ["multipart/alternative", "text/plain", "text/html"]
    parsed = parse_message(raw)
    assert parsed.text == "Plain *bold*\n"
    assert parsed.html == "<p>Plain <b>bold</b></p>\n"


def test_html_only_gets_a_readable_text_part():
    html = (
        "<html><head><style>p{color:red}</style></head><body>"
        "<p>Hello&nbsp;<b>World</b> &amp; all,</p>"
        '<p>Read <a href="https://example.org/doc">the docs</a> or '
        '<a href="https://example.org">https://example.org</a>, or write to '
        '<a href="mailto:help@example.org">help</a>.</p>'
        "<ul><li>one</li><li>two<ol><li>first</li><li>second</li></ol></li></ul>"
        "<blockquote><p>quoted</p></blockquote><p>Bye<br>Alice</p><script>x()</script>"
    )
    raw = build(text=None, html=html)
    assert structure(raw) == ["multipart/alternative", "text/plain", "text/html"]
    assert parse_message(raw).text == (
        "Hello\xa0World & all,\n"
        "\n"
        "Read the docs <https://example.org/doc> or https://example.org, or write to "
        "help <help@example.org>.\n"
        "\n"
        "- one\n"
        "- two\n"
        "  1. first\n"
        "  2. second\n"
        "\n"
        "> quoted\n"
        "\n"
        "Bye\n"
        "Alice\n"
    )


def test_html_to_text_keeps_preformatted_text():
    assert html_to_text("<p>a</p><pre>x  = 1\n  y</pre><p>b</p>") == "a\n\nx  = 1\n  y\n\nb\n"
    assert html_to_text("") == ""


def test_inline_images_are_related_and_attachments_mixed():
    raw = build(
        html='<p>Logo: <img src="cid:logo@satchel" alt="logo"></p>',
        attachments=[
            OutgoingAttachment("logo.png", PNG, content_id="logo@satchel", inline=True),
            OutgoingAttachment("report.pdf", b"%PDF-1.4 test"),
        ],
    )
    assert structure(raw) == [
        "multipart/mixed",
        ["multipart/related", ["multipart/alternative", "text/plain", "text/html"], "image/png"],
        "application/pdf",
    ]
    assert 'type="multipart/alternative"' in raw.decode()
    parsed = parse_message(raw)
    logo, report = parsed.attachments
    assert (logo.content_id, logo.inline, logo.filename) == ("logo@satchel", True, "logo.png")
    assert part_bytes(raw, logo.part) == PNG
    assert (report.filename, report.content_type, report.inline) == (
        "report.pdf",
        "application/pdf",
        False,
    )


def test_a_content_id_the_html_does_not_use_is_a_plain_attachment():
    raw = build(attachments=[OutgoingAttachment("logo.png", PNG, content_id="unused")])
    assert structure(raw) == ["multipart/mixed", "text/plain", "image/png"]


def test_forward_as_attachment_embeds_the_message_verbatim():
    original = (
        b"From: Carol <carol@example.org>\r\nSubject: Minutes\r\nMessage-ID: <m1@example.org>"
        b"\r\n\r\nThe minutes.\r\n.\r\n"
    )
    raw = build(subject=forward_subject("Minutes"), forward_as_attachment=original)
    assert structure(raw) == ["multipart/mixed", "text/plain", "message/rfc822"]
    [attached] = parse_message(raw).attachments
    assert (attached.content_type, attached.filename) == ("message/rfc822", "Minutes.eml")
    assert part_bytes(raw, attached.part) == original
    assert_7bit(raw)


def test_an_8bit_forwarded_message_stays_7bit_clean():
    original = "Subject: Grüße\r\n\r\nGrüße aus Köln\r\n".encode()
    raw = build(forward_as_attachment=original)
    assert_7bit(raw)
    [attached] = parse_message(raw).attachments
    assert part_bytes(raw, attached.part) == original
    utf8_raw, _ = build_utf8_message(draft(forward_as_attachment=original), domain="example.org")
    assert original in utf8_raw  # 8bit, as it is


def test_bcc_is_never_in_the_headers_but_in_the_envelope():
    message = draft(
        cc=[Address("Carol", "carol@example.org")],
        bcc=[Address("Secret", "secret@example.org"), Address("", "BOB@example.org")],
    )
    raw, _ = build_message(message, domain="example.org")
    assert b"secret" not in raw.lower()
    assert not re.search(rb"(?im)^bcc:", raw)
    assert envelope_recipients(message) == [
        "bob@example.org",
        "carol@example.org",
        "secret@example.org",
    ]


def test_only_bcc_recipients_write_undisclosed_recipients():
    raw = build(to=[], bcc=[BOB])
    assert "To: undisclosed-recipients:;" in headers(raw)
    with pytest.raises(AddressError):
        build(to=[], bcc=[])


# --------------------------------------------------------------------------- non-ASCII


def test_encoded_words_for_subject_and_display_names_round_trip():
    subject = "Grüße — “quoted” 日本語のテキスト and a long tail that has to be folded twice over"
    sender = Address('Doe, Jöhn "JJ" (Ünïcødé)', "john@example.org")
    to = [Address("Zoë", "zoe@example.org"), Address("Plain, Name", "plain@example.org")]
    raw = build(sender=sender, to=to, subject=subject, text="Ça va? 😀\n")
    assert_7bit(raw)
    head = headers(raw)
    assert "=?utf-8?" in head
    assert all(len(line) <= 78 for line in head.split("\r\n"))
    parsed = parse_message(raw)
    assert parsed.subject == subject
    assert parsed.sender == sender
    assert parsed.to == tuple(to)
    assert parsed.text == "Ça va? 😀\n"
    stdlib = email.message_from_bytes(raw, policy=policy.default)
    assert stdlib["Subject"] == subject
    assert stdlib["From"].addresses[0].display_name == sender.name


def test_long_display_names_fold_and_decode_per_rfc_2047():
    from email.header import decode_header, make_header

    names = ["Александр Сергеевич Пушкин из Москвы", "y" * 1500, "Jürgen " + "Groß " * 40]
    raw = build(to=[Address(name, f"u{i}@example.org") for i, name in enumerate(names)])
    assert_7bit(raw)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    head = headers(raw).replace("\r\n", "")
    to = head[head.index("To: ") + 4 : head.index("Subject:")]
    decoded = [
        str(make_header(decode_header(part.rsplit("<", 1)[0]))).strip() for part in to.split(">,")
    ]
    assert decoded == [" ".join(name.split()) for name in names]
    # Our own reader joins adjacent encoded words the same way (RFC 2047 section 6.2).
    assert [a.name for a in parse_message(raw).to] == decoded


@pytest.mark.parametrize(
    "filename",
    [
        "résumé.pdf",
        "Übersicht 2024 · 日本語のファイル名がとても長い場合でも正しく届くこと.pdf",
        "a-plain-ascii-file-name-that-is-long-enough-to-need-rfc-2231-continuations.txt",
        'a "quoted" name.txt',
    ],
)
def test_rfc2231_filenames_round_trip(filename):
    raw = build(attachments=[OutgoingAttachment(filename, b"data", "application/pdf")])
    assert_7bit(raw)
    [attachment] = parse_message(raw).attachments
    expected = filename.replace('"', "_")  # safe_filename's doing
    assert attachment.filename == expected
    part = email.message_from_bytes(raw, policy=policy.default).get_payload()[1]
    assert part.get_filename() == expected
    if not filename.isascii():
        assert "filename*0*=utf-8''" in raw.decode() or "filename*=utf-8''" in raw.decode()
        assert 'name="=?utf-8?' in raw.decode()  # the RFC 2047 fallback


def test_filenames_are_made_safe():
    raw = build(attachments=[OutgoingAttachment("../../etc/pass\u202ewd.txt", b"x")])
    [attachment] = parse_message(raw).attachments
    assert attachment.filename == "passwd.txt"


def test_idn_domains_punycode_on_the_wire_unicode_for_display():
    [address] = parse_addresses("Jürgen <jurgen@Bücher.example>")
    assert address == Address("Jürgen", "jurgen@Bücher.example")
    assert envelope_address(address) == "jurgen@xn--bcher-kva.example"
    raw = build(to=[address])
    assert "jurgen@xn--bcher-kva.example" in headers(raw)
    utf8_raw, _ = build_utf8_message(draft(to=[address]), domain="example.org")
    assert "jurgen@Bücher.example".encode() in utf8_raw


def test_non_ascii_local_parts_need_the_utf8_build():
    message = draft(to=[Address("Jöhn", "jöhn@example.org")])
    assert needs_smtputf8(message)
    assert not needs_smtputf8(draft())
    with pytest.raises(AddressError) as caught:
        build_message(message, domain="example.org")
    assert "SMTPUTF8" in caught.value.errors["jöhn@example.org"]
    raw, _ = build_utf8_message(message, domain="example.org")
    assert "To: Jöhn <jöhn@example.org>".encode() in raw
    assert parse_message(raw).to == (Address("Jöhn", "jöhn@example.org"),)
    assert envelope_recipients(message) == ["jöhn@example.org"]


def test_seven_bit_cleanliness_with_hostile_bodies():
    text = "é" * 3000 + "\n" + "x" * 5000 + "\n.\n..\nFrom here\n" + "trailing   \n" + "\x00nul\n"
    raw = build(
        text=text,
        html="<p>" + "ü" * 4000 + "</p>",
        attachments=[OutgoingAttachment("t.txt", "é\n".encode() * 10, "text/plain")],
    )
    assert_7bit(raw)
    parsed = parse_message(raw)
    assert parsed.text == text.replace("\x00", "")
    assert parsed.html == "<p>" + "ü" * 4000 + "</p>\n"
    assert part_bytes(raw, parsed.attachments[0].part) == "é\n".encode() * 10


def test_ten_megabyte_attachment_round_trips_and_builds_fast():
    payload = os.urandom(10 * 1024 * 1024)
    message = draft(attachments=[OutgoingAttachment("big.bin", payload)])
    started = time.perf_counter()
    raw, _ = build_message(message, domain="example.org")
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert_7bit(raw)
    [attachment] = parse_message(raw).attachments
    assert attachment.size == len(payload)
    decoded = part_bytes(raw, attachment.part)
    assert hashlib.sha256(decoded).hexdigest() == hashlib.sha256(payload).hexdigest()


# --------------------------------------------------------------------------- header injection


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hi\r\nBcc: victim@example.org"},
        {"subject": "Hi\nthere"},
        {"subject": "Hi\u2028there"},
        {"subject": "Hi\x00"},
        {"sender": Address("Alice\r\nBcc: x@example.org", "alice@example.org")},
        {"to": [Address("Bob", "bob@example.org\r\nBcc: x@example.org")]},
        {"cc": [Address("Eve\n", "eve@example.org")]},
        {"attachments": [OutgoingAttachment("a.txt\r\nContent-Type: text/html", b"x")]},
        {"in_reply_to": "<a@b>\r\nBcc: x@example.org"},
        {"references": ["<a@b>", "<c@d>\nX: y"]},
        {"message_id": "<a@b>\nBcc: x@example.org"},
        {"extra_headers": [("X-Mailer", "Satchel\r\nBcc: x@example.org")]},
        {"extra_headers": [("X-A\r\nBcc", "x")]},
    ],
)
def test_line_breaks_in_header_values_raise_header_injection(fields):
    with pytest.raises(HeaderInjection):
        build(**fields)


def test_line_breaks_in_typed_addresses_raise_header_injection():
    with pytest.raises(HeaderInjection):
        parse_addresses("bob@example.org\r\nBcc: x@example.org")
    with pytest.raises(HeaderInjection):
        parse_addresses(["ok@example.org", "Eve\n <eve@example.org>"])


def test_structural_headers_cannot_be_overridden():
    for name in ["Bcc", "From", "Content-Type", "Message-ID"]:
        with pytest.raises(ValueError):
            build(extra_headers=[(name, "x")])
    raw = build(extra_headers=[("X-Priority", "1"), ("X-Note", "naïve")])
    head = headers(raw)
    assert "X-Priority: 1" in head
    assert ("X-Note", "naïve") in parse_message(raw).headers
    assert_7bit(raw)


# --------------------------------------------------------------------------- addresses


def test_parse_addresses():
    found = parse_addresses(
        '"Doe, Jane" <jane@example.org>, bob@example.org; Zoë Z <zoe@example.org>,'
        " mailto:ann@example.org, <x@example.org>"
    )
    assert found == [
        Address("Doe, Jane", "jane@example.org"),
        Address("", "bob@example.org"),
        Address("Zoë Z", "zoe@example.org"),
        Address("", "ann@example.org"),
        Address("", "x@example.org"),
    ]
    assert parse_addresses(["A <a@example.org>", "b@example.org"]) == [
        Address("A", "a@example.org"),
        Address("", "b@example.org"),
    ]
    assert parse_addresses("") == []
    assert parse_addresses(['"john doe"@example.org']) == [Address("", '"john doe"@example.org')]
    assert parse_addresses("[192.0.2.1]".join(["x@", ""])) == [Address("", "x@[192.0.2.1]")]


def test_every_bad_address_is_listed_with_its_problem():
    with pytest.raises(AddressError) as caught:
        parse_addresses(
            "bob@, ok@example.org, @example.org, no-at-sign, a b@example.org,"
            " x@localhost, a..b@example.org, <c@example.org> trailing, d@-bad-.org,"
            " e@exa_mple.org, f@1.2.3.4"
        )
    assert caught.value.errors == {
        "bob@": "missing domain",
        "@example.org": "missing the part before the @",
        "no-at-sign": "missing @ and domain",
        "a b@example.org": "spaces are not allowed in an address (write: Name <address>)",
        "x@localhost": "the domain needs a dot (like example.org)",
        "a..b@example.org": "dots in the wrong place before the @",
        "<c@example.org> trailing": "unbalanced < > or text after the address",
        "d@-bad-.org": 'invalid domain label "-bad-"',
        "e@exa_mple.org": 'invalid domain label "exa_mple"',
        "f@1.2.3.4": "invalid domain (write an IP address as [192.0.2.1])",
    }
    assert "bob@: missing domain" in str(caught.value)


def test_bad_draft_addresses_are_all_reported():
    with pytest.raises(AddressError) as caught:
        build(to=[Address("", "bob@"), BOB], cc=[Address("", "carol")])
    assert set(caught.value.errors) == {"bob@", "carol"}


# --------------------------------------------------------------------------- ids, dates, replies


def test_message_id_and_date_come_from_the_draft():
    when = datetime(2024, 6, 3, 14, 5, tzinfo=timezone(timedelta(hours=2)))
    raw, message_id = build_message(
        draft(message_id="queued.1@example.org", date=when), domain="ignored.example"
    )
    assert message_id == "<queued.1@example.org>"
    parsed = parse_message(raw)
    assert parsed.message_id == "<queued.1@example.org>"
    assert parsed.date == when
    # Same draft, same id: a retried build is the same message.
    assert build_message(draft(message_id=message_id, date=when), domain="x.org")[1] == message_id
    generated = build_message(draft(), domain="mail.example.org")[1]
    assert generated.endswith("@mail.example.org>")
    assert generated != build_message(draft(), domain="mail.example.org")[1]


def test_reply_headers():
    raw = build(
        subject=reply_subject("Re: Minutes"),
        in_reply_to="<m2@example.org>",
        references=["<m1@example.org>", "<m2@example.org>", "not an id"],
    )
    parsed = parse_message(raw)
    assert parsed.subject == "Re: Minutes"
    assert parsed.in_reply_to == "<m2@example.org>"
    assert parsed.references == ("<m1@example.org>", "<m2@example.org>")


@pytest.mark.parametrize(
    ("subject", "reply", "forward"),
    [
        ("Minutes", "Re: Minutes", "Fwd: Minutes"),
        ("Re: Minutes", "Re: Minutes", "Fwd: Re: Minutes"),
        ("RE: re:  Minutes", "Re: Minutes", "Fwd: RE: re: Minutes"),
        ("Aw: Re[2]: Minutes", "Re: Minutes", "Fwd: Aw: Re[2]: Minutes"),
        ("Fwd: Minutes", "Re: Fwd: Minutes", "Fwd: Minutes"),
        ("FW: Fwd: Minutes", "Re: FW: Fwd: Minutes", "Fwd: Minutes"),
        ("", "Re:", "Fwd:"),
        ("Regarding the plan", "Re: Regarding the plan", "Fwd: Regarding the plan"),
    ],
)
def test_reply_and_forward_subjects_do_not_pile_up(subject, reply, forward):
    assert reply_subject(subject) == reply
    assert forward_subject(subject) == forward
    assert reply_subject(reply) == reply


def test_quote_text():
    when = datetime(2024, 6, 3, 14, 5, tzinfo=UTC)
    quoted = quote_text("Hello,\r\n\r\n> earlier\nBye\n\n", Address("Bob", "bob@example.org"), when)
    assert quoted == (
        "On Mon, 3 Jun 2024 at 14:05, Bob <bob@example.org> wrote:\n"
        "> Hello,\n>\n>> earlier\n> Bye\n"
    )
    assert quote_text("x", "bob@example.org", None) == "bob@example.org wrote:\n> x\n"


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("photo.JPG", b"", "image/jpeg"),
        ("report.pdf", b"", "application/pdf"),
        ("archive.tar.gz", b"", "application/gzip"),
        ("notes.txt", b"", "text/plain"),
        ("noext", PNG, "image/png"),
        ("noext", b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        ("noext", b"GIF89a....", "image/gif"),
        ("noext", b"%PDF-1.7", "application/pdf"),
        ("noext", b"PK\x03\x04....", "application/zip"),
        ("noext", b"\x00\x01\x02", "application/octet-stream"),
    ],
)
def test_guess_content_type(name, content, expected):
    assert guess_content_type(name, content) == expected


def test_attachment_content_type_is_validated():
    raw = build(attachments=[OutgoingAttachment("x", b"data", "Text/CSV; charset=utf-8")])
    assert parse_message(raw).attachments[0].content_type == "text/csv"
    with pytest.raises(ValueError):
        build(attachments=[OutgoingAttachment("x", b"data", "not a type")])
