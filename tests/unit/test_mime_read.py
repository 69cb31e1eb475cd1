"""Reading RFC 5322 messages: mailcore.protocols.mime against hand-written real-world mail.

The fixtures are in tests/data/mail/. Part numbers are checked by hand against RFC 3501's
example and against what a real Dovecot answers for BODYSTRUCTURE and BODY[part].
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import quopri
import random
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.response_types import BodyData

from mailcore.protocols.mime import (
    Address,
    AttachmentInfo,
    decode_header_value,
    parse_message,
    part_bytes,
    safe_filename,
    text_snippet,
)
from mailcore.protocols.sanitize import sanitize_html

MAIL = Path(__file__).resolve().parents[1] / "data" / "mail"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
MY_FIXTURES = [
    "alternative_utf8.eml",
    "bad_base64.eml",
    "bounce_report.eml",
    "broken_boundary.eml",
    "charsets.eml",
    "flowed.eml",
    "html_only.eml",
    "list_footer.eml",
    "missing_close_boundary.eml",
    "missing_date.eml",
    "mixed_attachments.eml",
    "nested_rfc822.eml",
    "related_cid.eml",
    "rfc3501_example.eml",
    "rfc822_base64.eml",
    "unknown_charset.eml",
]


def raw(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def parsed(name: str):
    return parse_message(raw(name))


def by_part(message) -> dict[str, AttachmentInfo]:
    return {a.part: a for a in message.attachments}


def message(headers: str, body: str = "Body.\n") -> bytes:
    return (headers.strip("\n") + "\n\n" + body).encode()


# Headers ----------------------------------------------------------------------------------------


def test_rfc2047_utf8_subject_names_ids_and_date():
    msg = parsed("alternative_utf8.eml")
    assert msg.subject == "Café €5 and 🍰"  # two folded encoded words, space kept inside
    assert msg.sender == Address("André Müller", "andre@example.org")
    assert msg.to == (
        Address("Doe, John", "john@example.org"),
        Address("山田太郎", "yamada@example.jp"),
    )
    assert msg.cc == ()  # undisclosed-recipients:; is an empty group
    assert msg.reply_to == (Address("Andre", "reply@example.org"),)
    assert msg.message_id == "<alt-1@example.org>"
    assert msg.in_reply_to == "<parent@example.org>"  # the trailing comment is dropped
    assert msg.references == ("<root@example.org>", "<parent@example.org>")
    assert msg.date == datetime(2003, 7, 1, 8, 52, 37, tzinfo=UTC)
    assert msg.date.utcoffset() == timedelta(hours=2)


def test_headers_are_all_kept_in_order_and_decoded():
    msg = parsed("alternative_utf8.eml")
    names = [name for name, _ in msg.headers]
    assert names[:6] == ["From", "To", "Cc", "Reply-To", "Subject", "Date"]
    values = dict(msg.headers)
    assert values["Subject"] == "Café €5 and 🍰"
    assert values["From"] == "André Müller <andre@example.org>"
    assert values["References"] == "<root@example.org> <parent@example.org>"  # unfolded


def test_iso_8859_1_koi8_r_and_shift_jis_encoded_words():
    msg = parsed("charsets.eml")
    assert msg.sender == Address("François Jörg", "francois@example.fr")
    assert msg.to == (Address("Привет", "ivan@example.ru"), Address("テスト", "taro@example.jp"))
    # Whitespace between adjacent encoded words goes; the "_" inside a word is a space.
    assert msg.subject == "日本語の件名 Grüße"
    assert msg.text == "Съешь же ещё этих мягких французских булок\n"  # 8-bit KOI8-R body


def test_unknown_charsets_and_raw_8bit_headers_are_read_best_effort():
    msg = parsed("unknown_charset.eml")
    assert msg.sender == Address("Jörg Schröder", "joerg@example.de")  # raw UTF-8 bytes
    assert msg.to == (Address("Renée", "renee@example.org"),)  # x-unknown, latin-1 bytes
    assert msg.subject == "Café crème"  # raw windows-1252 byte + x-mystery encoded word
    assert msg.text == "Crème brûlée € 5.\n"  # x-klingon body: windows-1252; NUL removed


def test_mixed_8bit_header_keeps_utf8_and_reads_the_rest_as_windows_1252():
    assert decode_header_value(b"caf\xc3\xa9 \xff \x80") == "café ÿ €"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=?utf-8?q?=E2=82?= =?utf-8?q?=AC?= 5", "€ 5"),  # a character split across words
        ("=?shift_jis?b?g2U=?=\r\n =?shift_jis?b?g1g=?=\r\n =?shift_jis?b?g2c=?=", "テスト"),
        ("=?UTF-8*en?Q?English_text?=", "English text"),  # RFC 2231 language suffix
        ("=?utf-8?b?w6k?=", "é"),  # base64 without padding
        ("=?utf-8?B?w6k=?= and =?utf-8?Q?=C3=A9?=", "é and é"),  # plain text between: kept
        ("Re:=?utf-8?q?caf=C3=A9?=", "Re:café"),  # no separating space (sent anyway)
        ("=?utf-8?q?line=0D=0ABcc:_evil@example.org?=", "line  Bcc: evil@example.org"),
        ("a\x00b\tc", "ab c"),
        ("=?no-such-charset?q?na=EFve?=", "naïve"),
        ("=?utf-7?q?+AGEAYgBj-?=", "+AGEAYgBj-"),  # refused codec: bytes read as text
        ("=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        ("=?unicode-escape?q?\\u0041?=", "\\u0041"),
        ("", ""),
    ],
)
def test_decode_header_value(value, expected):
    assert decode_header_value(value) == expected


def test_decode_header_value_never_raises_and_never_returns_surrogates():
    rng = random.Random(5322)
    alphabet = b"=?_QBqb-utf8koi8shift_jis:;<>@ \t\r\n\x00\x80\xff\xe2\x82\xac" + bytes(
        range(32, 127)
    )
    for _ in range(2000):
        value = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for candidate in (value, value.decode("ascii", "surrogateescape")):
            text = decode_header_value(candidate)
            text.encode("utf-8")  # raises on a lone surrogate
            assert "\n" not in text and "\r" not in text and "\x00" not in text


def test_missing_date_header_lines_without_colon_and_spaced_colon():
    msg = parsed("missing_date.eml")
    assert msg.date is None
    assert msg.subject == "Obsolete spacing before the colon"
    # The stray line is dropped instead of ending the headers: X-Mailer after it survives.
    assert ("X-Mailer", "Hand written") in msg.headers
    assert msg.message_id == "<msgid-without-brackets@example.org>"
    assert msg.text == "The body survives.\n"


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Tue, 1 Jul 2003 10:52:37 +0200", datetime(2003, 7, 1, 8, 52, 37, tzinfo=UTC)),
        ("Tue, 01 Jul 2003 10:52:37 +0200 (CEST)", datetime(2003, 7, 1, 8, 52, 37, tzinfo=UTC)),
        ("1 Jul 2003 10:52:37 GMT", datetime(2003, 7, 1, 10, 52, 37, tzinfo=UTC)),
        ("Tue, 1 Jul 03 10:52:37 -0000", datetime(2003, 7, 1, 10, 52, 37, tzinfo=UTC)),
        ("2003-07-01T10:52:37+02:00", datetime(2003, 7, 1, 8, 52, 37, tzinfo=UTC)),
        ("Tue, 31 Feb 2003 10:52:37 +0000", None),
        ("Tue, 1 Jul 2003 10:52:37 +9999", None),
        ("yesterday, around noon", None),
        ("", None),
    ],
)
def test_dates(date, expected):
    msg = parse_message(message(f"From: a@example.org\nDate: {date}"))
    assert msg.date == expected
    if msg.date is not None:
        assert msg.date.tzinfo is not None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"Doe, John" <j@example.org>', [Address("Doe, John", "j@example.org")]),
        ("j@example.org (John Doe)", [Address("John Doe", "j@example.org")]),
        ('"=?utf-8?q?Doe=2C_J?=" <j@example.org>', [Address("Doe, J", "j@example.org")]),
        ("<j@example.org>", [Address("", "j@example.org")]),
        (
            "a@example.org, , b@example.org",
            [Address("", "a@example.org"), Address("", "b@example.org")],
        ),
        (
            "team: a@example.org, b@example.org;",
            [Address("", "a@example.org"), Address("", "b@example.org")],
        ),
        ('"unterminated <j@example.org>', [Address("", "j@example.org")]),
        ("Mailer Daemon", []),
        ("", []),
    ],
)
def test_address_lists(header, expected):
    assert list(parse_message(message(f"To: {header}")).to) == expected


def test_sender_without_an_address_keeps_the_name():
    assert parse_message(message("From: Mailer Daemon")).sender == Address("Mailer Daemon", "")
    assert parse_message(message("Subject: none")).sender is None


# Bodies -----------------------------------------------------------------------------------------


def test_multipart_alternative_picks_text_and_html():
    msg = parsed("alternative_utf8.eml")
    assert msg.text.startswith("Grüße, café at https://example.org/menu soon.\n")
    assert "quoted-printable encoder.\n" in msg.text  # soft line break joined
    assert "\n> quoted text from before" in msg.text
    assert msg.html == "<html><body><p>Grüße, <b>café</b></p></body></html>"
    assert msg.attachments == ()


def test_html_only_with_charset_in_meta():
    msg = parsed("html_only.eml")
    assert msg.text is None
    assert "<p>\u201cQuoted\u201d café € price</p>" in msg.html  # windows-1252 from the meta
    assert "<script>" in msg.html  # unsanitized: the caller sanitizes


def test_mailing_list_footer_is_appended_to_both_bodies():
    msg = parsed("list_footer.eml")
    assert msg.text.startswith("See you at 10.\n\n____")
    assert msg.text.endswith("list mailing list -- https://lists.example.org/list")
    assert msg.html.startswith("<p>See you at <b>10</b>.</p><div")
    assert 'href="https://lists.example.org/list"' in msg.html
    assert msg.attachments == ()


def test_format_flowed_is_unwrapped():
    msg = parsed("flowed.eml")
    assert msg.text.splitlines() == [
        "This paragraph was wrapped by the sender at a short width so it came in several lines.",
        ">> Quoted text that also flowed over two lines.",
        ">Space-stuffed line.",
        "-- ",
        "Signature",
    ]


def test_broken_boundary_still_shows_the_text():
    msg = parsed("broken_boundary.eml")
    assert msg.text == "Salvage this text."
    assert msg.attachments == ()
    # What a server sees: one part whose content is the whole body.
    assert part_bytes(raw("broken_boundary.eml"), "1").startswith(b"--actual\n")


def test_missing_closing_boundary_keeps_the_last_part():
    msg = parsed("missing_close_boundary.eml")
    assert msg.text == "First part."
    (notes,) = msg.attachments
    assert (notes.part, notes.filename) == ("2", "notes.txt")
    assert part_bytes(raw("missing_close_boundary.eml"), "2").startswith(b"Second part")


def test_bad_base64_is_decoded_leniently():
    msg = parsed("bad_base64.eml")
    assert msg.text == "Hello, world!"  # a stray "!", a line without padding
    assert part_bytes(raw("bad_base64.eml"), "2") == b"ABCDEF"  # two padded chunks


def test_delivery_report():
    msg = parsed("bounce_report.eml")
    assert msg.text == "The mail system could not deliver your message."
    assert [(a.part, a.content_type, a.filename) for a in msg.attachments] == [
        ("2", "message/delivery-status", "attachment.txt"),
        ("3", "message/rfc822", "Hello there.eml"),
    ]
    assert b"Status: 5.1.1" in part_bytes(raw("bounce_report.eml"), "2")


# Attachments and part numbers -------------------------------------------------------------------


def test_attachment_names_types_sizes_and_bytes():
    data = raw("mixed_attachments.eml")
    msg = parse_message(data)
    assert msg.text == "See attached."
    parts = by_part(msg)
    assert {p: a.filename for p, a in parts.items()} == {
        "2": "€ rates 2024.pdf",  # RFC 2231 continuations with a charset
        "3": "résumé.bin",  # RFC 2047 inside quotes (Outlook)
        "4": "passwd",  # ../../etc/passwd
        "5": "evil.exe",  # C:\\evil.exe
        "6": "invoicefdp.exe",  # U+202E RIGHT-TO-LEFT OVERRIDE removed
        "7": "attachment.png",  # no name at all
        "8": "café.ics",  # RFC 2231 with an unknown charset
    }
    assert parts["2"].content_type == "application/pdf"
    assert parts["8"].content_type == "text/calendar"
    assert part_bytes(data, "2") == b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    assert part_bytes(data, "3") == bytes(range(256))
    assert part_bytes(data, "7") == PNG
    for info in msg.attachments:
        assert info.size == len(part_bytes(data, info.part))
        assert info.inline is False and info.content_id is None


def test_nested_message_is_one_attachment_named_after_its_subject():
    data = raw("nested_rfc822.eml")
    msg = parse_message(data)
    assert msg.text == "Forwarding this."
    (forwarded,) = msg.attachments  # its own csv is not listed separately
    assert forwarded == AttachmentInfo(
        part="2",
        filename="Q3_Q4 numbers — final.eml",
        content_type="message/rfc822",
        size=len(part_bytes(data, "2")),
        content_id=None,
        inline=False,
    )
    inner = parse_message(part_bytes(data, "2"))
    assert inner.subject == "Q3/Q4 numbers — final"
    assert inner.text == "The inner text."
    assert [(a.part, a.filename) for a in inner.attachments] == [("2", "numbers.csv")]
    # Inside the attached message the parts are 2.1, 2.2.
    assert part_bytes(data, "2.1") == b"The inner text."
    assert part_bytes(data, "2.2") == b"q,value\n3,10"


def test_base64_encoded_message_rfc822_is_decoded():
    data = raw("rfc822_base64.eml")
    (forwarded,) = parse_message(data).attachments
    assert (forwarded.part, forwarded.filename) == ("2", "Encoded inner.eml")
    assert parse_message(part_bytes(data, "2")).text == "Inner body.\r\n".replace("\r\n", "\n")
    assert part_bytes(data, "2.1") == b"Inner body.\r\n"


def test_related_cid_image_is_inline_and_can_be_shown():
    data = raw("related_cid.eml")
    msg = parse_message(data)
    assert msg.text == "Logo below."
    parts = by_part(msg)
    assert parts["1.2"] == AttachmentInfo(
        part="1.2",
        filename="logo.png",
        content_type="image/png",
        size=len(PNG),
        content_id="logo@example.org",
        inline=True,  # referenced by cid: from the HTML (url-encoded there)
    )
    assert parts["2"].inline is True  # Content-Disposition: inline
    assert parts["2"].content_id is None
    images = {a.content_id: a for a in msg.attachments if a.content_id}

    def cid_url(cid: str) -> str | None:
        if cid not in images:
            return None
        encoded = base64.b64encode(part_bytes(data, images[cid].part)).decode()
        return f"data:{images[cid].content_type};base64,{encoded}"

    safe = sanitize_html(msg.html, cid_url=cid_url)
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in safe.html
    assert 'data-remote-src="https://tracker.example.net/open.gif"' in safe.html
    assert safe.remote_images_blocked == 1


# RFC 3501 section 6.4.5's example, part by part (each part holds its own number).
RFC3501_PARTS = {
    "1": b"part 1 text",
    "2": bytes(range(256)),
    "3.1": b"part 3.1 text",
    "3.2": b"part 3.2 bytes",
    "4.1": b"GIF89a\x01\x00\x01\x00\x00\x00\x00,",
    "4.2.1": b"part 4.2.1 text",
    "4.2.2.1": b"part 4.2.2.1 text",
    "4.2.2.2": b"part 4.2.2.2 <bold>rich</bold>",
}


@pytest.mark.parametrize(("part", "content"), RFC3501_PARTS.items())
def test_rfc3501_example_leaf_parts(part, content):
    assert part_bytes(raw("rfc3501_example.eml"), part) == content


def test_rfc3501_example_container_parts():
    data = raw("rfc3501_example.eml")
    # MESSAGE/RFC822 parts are the whole enclosed message; a MULTIPART part its body.
    assert part_bytes(data, "3").startswith(b"From: inner@example.org\r\nSubject: Part three\r\n")
    assert part_bytes(data, "4.2").startswith(b"From: deeper@example.org\r\n")
    assert part_bytes(data, "4").startswith(b"--four\r\nContent-Type: IMAGE/GIF")
    assert part_bytes(data, "4.2.2").startswith(b"--alt\r\n")
    for missing in ["0", "5", "3.3", "4.1.1", "4.2.3", "", "TEXT", "1.1"]:
        with pytest.raises(KeyError):
            part_bytes(data, missing)


def test_rfc3501_example_attachments():
    msg = parsed("rfc3501_example.eml")
    assert msg.text == "part 1 text"
    assert [(a.part, a.content_type, a.filename) for a in msg.attachments] == [
        ("2", "application/octet-stream", "bytes.bin"),
        ("3", "message/rfc822", "Part three.eml"),
        ("4.1", "image/gif", "attachment.gif"),
        ("4.2", "message/rfc822", "Part 4.2.eml"),
    ]


def test_single_part_message_body_is_part_1():
    data = raw("charsets.eml")
    assert part_bytes(data, "1") == "Съешь же ещё этих мягких французских булок\n".encode("koi8-r")
    with pytest.raises(KeyError):
        part_bytes(data, "2")


def test_a_message_that_is_one_attachment():
    data = message(
        "From: scanner@example.org\nContent-Type: application/pdf\n"
        'Content-Disposition: attachment; filename="scan.pdf"\n'
        "Content-Transfer-Encoding: base64",
        "JVBERi0xLjQK\n",
    )
    msg = parse_message(data)
    assert msg.text is None and msg.html is None
    assert [(a.part, a.filename, a.size) for a in msg.attachments] == [("1", "scan.pdf", 9)]
    assert part_bytes(data, "1") == b"%PDF-1.4\n"


def decode_base64_chunks(data: bytes) -> bytes:
    """Base64 where each "="-padded chunk is decoded on its own (binascii stops at the first)."""
    cleaned = re.sub(rb"[^A-Za-z0-9+/=]", b"", data)
    chunks = [c for c in re.split(rb"=+", cleaned) if c]
    return b"".join(binascii.a2b_base64(c + b"=" * (-len(c) % 4)) for c in chunks)


def _server_structure(body: BodyData, prefix: str, out: dict[str, tuple[str, str]]) -> None:
    """IMAP part numbers from a BODYSTRUCTURE, per RFC 3501 6.4.5."""
    join = (lambda n: f"{prefix}.{n}") if prefix else str
    if body.is_multipart:
        for index, child in enumerate(body[0], 1):
            _server_part(child, join(index), out)
    else:
        _server_part(body, join(1), out)


def _server_part(body: BodyData, number: str, out: dict[str, tuple[str, str]]) -> None:
    if body.is_multipart:
        out[number] = ("multipart/" + body[1].decode().lower(), "")
        for index, child in enumerate(body[0], 1):
            _server_part(child, f"{number}.{index}", out)
        return
    content_type = (body[0] + b"/" + body[1]).decode().lower()
    out[number] = (content_type, (body[5] or b"").decode().lower())
    if content_type == "message/rfc822":
        inner = body[8] if isinstance(body[8], BodyData) else BodyData.create(body[8])
        _server_structure(inner, number, out)


def test_part_numbers_and_attachment_bytes_match_a_real_imap_server(dovecot):
    """Every fixture through Dovecot: the numbers it gives in BODYSTRUCTURE are the ones we
    give, and each attachment's BODY[part], decoded, is our part_bytes."""
    dovecot.add_user("mimeread", "secret-mimeread")
    for name in MY_FIXTURES:
        dovecot.append("mimeread", "INBOX", raw(name))
    with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False, timeout=30) as client:
        client.login("mimeread", "secret-mimeread")
        client.select_folder("INBOX", readonly=True)
        uids = sorted(client.search("ALL"))
        structures = client.fetch(uids, ["BODYSTRUCTURE"])
        for name, uid in zip(MY_FIXTURES, uids, strict=True):
            data = raw(name)
            server: dict[str, tuple[str, str]] = {}
            _server_structure(structures[uid][b"BODYSTRUCTURE"], "", server)
            for number in server:
                part_bytes(data, number)  # each server part exists here (else KeyError)
            with pytest.raises(KeyError):
                part_bytes(data, str(len(server) + 1))
            for info in parse_message(data).attachments:
                content_type, encoding = server[info.part]
                assert info.content_type == content_type, (name, info.part)
                if content_type.startswith("message/"):
                    continue  # regenerated from the parse: same message, not byte for byte
                key = f"BODY[{info.part}]".encode()
                fetched = client.fetch([uid], [f"BODY.PEEK[{info.part}]"])[uid][key]
                if encoding == "base64":
                    fetched = decode_base64_chunks(fetched)
                elif encoding == "quoted-printable":
                    fetched = quopri.decodestring(fetched)
                else:  # Dovecot stores lines with CRLF
                    fetched = fetched.replace(b"\r\n", b"\n")
                assert fetched.rstrip(b"\n") == part_bytes(data, info.part).rstrip(b"\n"), (
                    name,
                    info.part,
                )


# Robustness -------------------------------------------------------------------------------------


def test_empty_and_headerless_input():
    assert not parse_message(b"").text
    assert parse_message(b"just some text\nno headers").text == "just some text\nno headers"
    assert parse_message(bytearray(b"Subject: x\n\ny")).subject == "x"


def test_deep_nesting_does_not_crash():
    depth = 1500  # past Python's recursion limit in the stdlib parser
    data = b"Subject: deep\n" + b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(depth)
    )
    msg = parse_message(data + b"Content-Type: text/plain\n\nbottom\n")
    assert msg.subject == "deep"


def test_mutated_fixtures_never_raise():
    rng = random.Random(3501)
    sources = [raw(name) for name in MY_FIXTURES]
    for _ in range(300):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            action = rng.random()
            if action < 0.4:
                data[position] = rng.randrange(256)
            elif action < 0.7:
                del data[position : position + rng.randint(1, 40)]
            else:
                data[position:position] = rng.choice([b"\n", b"=?", b"?=", b"--", b":", b";", b'"'])
        msg = parse_message(bytes(data))
        for info in msg.attachments:
            assert info.size == len(part_bytes(bytes(data), info.part))
            assert info.filename and "/" not in info.filename
        for text in [msg.subject, msg.text or "", msg.html or "", *(v for _, v in msg.headers)]:
            text.encode("utf-8")


def test_ten_megabyte_message_parses_quickly():
    payload = random.Random(1).randbytes(7 * 1024 * 1024)
    text = ("A line of ordinary text with a link https://example.org/ in it.\n" * 30000).encode()
    data = (
        b"From: big@example.org\nSubject: big\nContent-Type: multipart/mixed; boundary=XX\n\n"
        b"--XX\nContent-Type: text/plain; charset=utf-8\n\n" + text + b"--XX\n"
        b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(payload)
        + b"--XX--\n"
    )
    assert len(data) > 10 * 1024 * 1024
    started = time.perf_counter()
    msg = parse_message(data)
    assert part_bytes(data, "2") == payload
    text_snippet(msg.text, msg.html)
    assert time.perf_counter() - started < 10
    assert msg.attachments[0].size == len(payload)


def test_many_header_lines_without_colon_are_linear():
    junk = b"junk line without a colon\n" * 50_000
    data = b"From: a@example.org\n" + junk + b"Subject: after the junk\n\nBody\n"
    started = time.perf_counter()
    msg = parse_message(data)
    assert time.perf_counter() - started < 5
    assert msg.subject == "after the junk"
    assert msg.text == "Body\n"


# safe_filename ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("../../etc/passwd", "text/plain", "passwd"),
        ("C:\\evil.exe", "application/octet-stream", "evil.exe"),
        ("C:evil.exe", "application/octet-stream", "C_evil.exe"),
        ("\\\\server\\share\\x.doc", "application/msword", "x.doc"),
        ("invoice\u202efdp.exe", "application/octet-stream", "invoicefdp.exe"),
        ("a\x00b\x1fc\x7f.txt", "text/plain", "abc.txt"),
        ("zero\u200bwidth\ufeff.txt", "text/plain", "zerowidth.txt"),
        ("tab\tand\nnewline.txt", "text/plain", "tab and newline.txt"),
        ('what?<is>:"this"|*.txt', "text/plain", "what__is___this___.txt"),
        ("..", "image/png", "attachment.png"),
        (".htaccess", "text/plain", "htaccess"),
        ("trailing dots...  ", "text/plain", "trailing dots"),
        ("CON", "text/plain", "_CON"),
        ("lpt1.txt", "text/plain", "_lpt1.txt"),
        ("=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?=", "application/pdf", "résumé.pdf"),
        ("cafe\u0301.txt", "text/plain", "café.txt"),  # NFC
        (None, "image/jpeg", "attachment.jpg"),
        ("", "message/rfc822", "attachment.eml"),
        ("   ", "application/x-unknown-thing", "attachment"),
        ("dir/", "application/pdf", "attachment.pdf"),
        ("\udcff.txt", "text/plain", "\ufffd.txt"),
    ],
)
def test_safe_filename(name, content_type, expected):
    assert safe_filename(name, content_type) == expected


def test_safe_filename_is_at_most_255_bytes_and_keeps_the_extension():
    name = safe_filename("€" * 200 + ".pdf", "application/pdf")
    assert len(name.encode("utf-8")) <= 255
    assert name.endswith("€.pdf")
    assert safe_filename("x" * 1000, "text/plain") == "x" * 255


# text_snippet -----------------------------------------------------------------------------------


def test_snippet_skips_quotes_and_signature():
    text = "Sounds good,\nsee you then.\n\nOn Tue, Bob wrote:\n> old text\n> more\n-- \nAlice\n"
    assert text_snippet(text, None) == "Sounds good, see you then. On Tue, Bob wrote:"


def test_snippet_of_only_quoted_text_falls_back_to_the_quote():
    assert text_snippet("> only a quote\n>> deeper", None) == "only a quote deeper"


def test_snippet_from_html_without_hidden_or_invisible_text():
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<p>Hello&nbsp;<b>World</b>\u200c\u200c&zwnj;</p><script>var x = 1;</script>"
        "<blockquote>quoted reply</blockquote><p>Bye &amp; thanks</p></body></html>"
    )
    assert text_snippet(None, html) == "Hello World Bye & thanks"
    assert text_snippet("", html) == "Hello World Bye & thanks"


def test_snippet_limit_and_ellipsis():
    text = "word " * 100
    snippet = text_snippet(text, None, limit=50)
    assert len(snippet) <= 50
    assert snippet.endswith("word…")
    assert text_snippet("short", None, limit=50) == "short"
    assert text_snippet(None, None) == ""
    assert len(text_snippet("x" * 500, None, limit=10)) == 10


def test_snippet_of_a_huge_html_body_is_fast():
    html = "<p>" + "lorem ipsum " * 1_000_000 + "</p>"
    started = time.perf_counter()
    assert text_snippet(None, html).startswith("lorem ipsum")
    assert time.perf_counter() - started < 1


def test_parsed_dates_compare_with_the_stdlib():
    stamp = email.utils.format_datetime(datetime(2020, 2, 29, 23, 59, 59, tzinfo=UTC))
    assert parse_message(message(f"Date: {stamp}")).date == datetime(
        2020, 2, 29, 23, 59, 59, tzinfo=UTC
    )
