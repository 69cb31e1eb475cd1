"""FTP listing parsing (LIST in its real-world dialects, MLSD) and the reply-code table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ftpcore.protocols import replies
from ftpcore.protocols.listing import (
    Entry,
    decode_name,
    encode_name,
    mode_string,
    parse_list_line,
    parse_listing,
    parse_mlsd_line,
)

CORPUS = Path(__file__).resolve().parent.parent / "data" / "ftp" / "listings.txt"
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    number: int  # line number in the corpus file
    section: str
    kind: str  # "L" (LIST) or "M" (MLSD)
    line: str
    expected: dict | None


def _load() -> list[Case]:
    cases: list[Case] = []
    section = ""
    pending: tuple[int, str, str] | None = None
    for number, text in enumerate(CORPUS.read_text(encoding="utf-8").splitlines(), 1):
        if text.startswith("## "):
            section = text[3:]
        elif text[:2] in ("L ", "M "):
            assert pending is None, f"line {number}: two listing lines without an expectation"
            pending = (number, text[0], text[2:])
        elif text.startswith("= "):
            assert pending is not None, f"line {number}: expectation without a listing line"
            cases.append(Case(pending[0], section, pending[1], pending[2], json.loads(text[2:])))
            pending = None
    assert pending is None
    return cases


CASES = _load()


def _parse(case: Case) -> Entry | None:
    raw = case.line.encode("utf-8")
    if case.kind == "M":
        return parse_mlsd_line(raw)
    return parse_list_line(raw, now=NOW)


def _modified(entry: Entry) -> str | None:
    if entry.modified is None:
        return None
    assert entry.modified.tzinfo is not None
    assert entry.modified.utcoffset().total_seconds() == 0
    return entry.modified.replace(tzinfo=None).isoformat()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.number}:{c.line[:40]}" for c in CASES])
def test_corpus_line(case: Case) -> None:
    entry = _parse(case)
    if case.expected is None:
        assert entry is None, f"{case.line!r} should be skipped, got {entry}"
        return
    assert entry is not None, f"{case.line!r} was not understood"
    for key, want in case.expected.items():
        got = _modified(entry) if key == "modified" else getattr(entry, key)
        assert got == want, f"{key}: {got!r} != {want!r} for {case.line!r}"
    # The raw name is the exact bytes of the name on the wire.
    assert entry.raw_name == entry.name.encode("utf-8")
    assert case.line.encode("utf-8").endswith(entry.raw_name) or entry.type == "link"


def test_corpus_covers_every_format() -> None:
    assert len(CASES) >= 60
    sections = {c.section.split(":")[0] for c in CASES}
    assert {
        "Unix",
        "DOS / IIS / Windows",
        "EPLF",
        "MLSD (RFC 3659), incl. unix.mode / perm facts, cdir/pdir, OS.unix symlinks",
    } <= sections
    parsed = [e for e in map(_parse, CASES) if e is not None]
    assert {e.type for e in parsed} == {"file", "dir", "link"}
    assert sum(1 for c in CASES if c.expected is None) >= 8


def test_whole_listing_survives_odd_lines() -> None:
    body = (
        b"total 12\r\n"
        b"drwxr-xr-x   2 ftp ftp 4096 Jan 12 14:02 .\r\n"
        b"drwxr-xr-x   2 ftp ftp 4096 Jan 12 14:02 ..\r\n"
        b"-rw-r--r--   1 ftp ftp   10 Jan 12 14:02 a.txt\r\n"
        b"\xff\xfe garbage that is no listing \x00\r\n"
        b"-rw-r--r--   1 ftp ftp   20 Jan 12 14:02 b c.txt\n"  # bare LF
        b"-rw-r--r--   1 ftp ftp   20 Jan 12 14:02 evil/../../etc/passwd\r\n"
        b"-rw-r--r--   1 ftp ftp   30 Jan 12 14:02 a.txt\r\n"  # duplicate: first wins
        b"10-23-2020  02:02PM       <DIR>          win dir\r\n"
        b"+i1.2,m825718503,r,s280,\teplf.html\r\n"
        b"-rw-r--r--   1 ftp ftp   20 Jan 12 14:02 last-without-newline"
    )
    entries = parse_listing(body, mlsd=False, now=NOW)
    assert [(e.name, e.size) for e in entries] == [
        ("a.txt", 10),
        ("b c.txt", 20),
        ("win dir", None),
        ("eplf.html", 280),
        ("last-without-newline", 20),
    ]


def test_mlsd_listing_with_paths_and_hostile_names() -> None:
    body = (
        b"type=cdir;modify=20200101120000; /home/alice\r\n"
        b"type=file;size=3;modify=20200101120000; /home/alice/full-path.txt\r\n"
        b"type=dir;modify=20200101120000; plain dir\r\n"
        b"type=file;size=1;modify=20200101120000; ..\r\n"
        b"not mlsd at all\r\n"
    )
    entries = parse_listing(body, mlsd=True)
    assert [(e.name, e.type, e.raw_name) for e in entries] == [
        ("full-path.txt", "file", b"full-path.txt"),
        ("plain dir", "dir", b"plain dir"),
    ]


def test_only_named_entries_are_kept() -> None:
    body = (
        b"type=file;size=3;modify=20200101120000; a.txt\r\n"
        b"type=file;size=4;modify=20200101120000; /home/alice/b c.txt\r\n"
        b"type=file;size=5;modify=20200101120000; other\r\n"
    )
    entries = parse_listing(body, mlsd=True, only={"a.txt", "b c.txt", "missing"})
    assert [(e.name, e.size) for e in entries] == [("a.txt", 3), ("b c.txt", 4)]
    listed = b"-rw-r--r-- 1 u g 3 Jan 01 2020 a.txt\r\n-rw-r--r-- 1 u g 5 Jan 01 2020 other\r\n"
    assert [e.name for e in parse_listing(listed, mlsd=False, only={"a.txt"})] == ["a.txt"]


@pytest.mark.parametrize(
    ("raw", "encoding", "name"),
    [
        (b"caf\xe9.txt", "latin-1", "café.txt"),
        (b"caf\xe9.txt", "utf-8", "caf\udce9.txt"),  # undecodable: kept as a surrogate
        ("Привет.txt".encode("cp1251"), "cp1251", "Привет.txt"),
        ("中文名.txt".encode("gbk"), "gbk", "中文名.txt"),
        (
            "中文名.txt".encode("gbk"),
            "utf-8",
            "中文名.txt".encode("gbk").decode("utf-8", "surrogateescape"),
        ),
    ],
)
def test_site_encodings_round_trip(raw: bytes, encoding: str, name: str) -> None:
    line = b"-rw-r--r--   1 ftp ftp 5 Jan 12 14:02 " + raw
    entry = parse_list_line(line, encoding, now=NOW)
    assert entry is not None
    assert entry.name == name
    assert entry.raw_name == raw
    assert encode_name(entry.name, encoding) == raw
    assert decode_name(raw, encoding) == name
    mlsd = parse_listing(b"type=file;size=5; " + raw + b"\r\n", mlsd=True, encoding=encoding)
    assert [(e.name, e.raw_name) for e in mlsd] == [(name, raw)]


def test_yearless_dates_pick_the_latest_year_not_in_the_future() -> None:
    def modified(line: bytes, now: datetime) -> datetime | None:
        entry = parse_list_line(line, now=now)
        assert entry is not None
        return entry.modified

    new_year = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    assert modified(b"-rw-r--r-- 1 u g 5 Dec 31 23:00 x", new_year).year == 2025
    assert modified(b"-rw-r--r-- 1 u g 5 Jan  1 09:00 x", new_year).year == 2026  # skew
    # Feb 29 seen in a non-leap year: the last leap year, never a dropped line.
    assert modified(b"-rw-r--r-- 1 u g 5 Feb 29 10:00 x", datetime(2026, 11, 26, tzinfo=UTC)) == (
        datetime(2024, 2, 29, 10, 0, tzinfo=UTC)
    )


def test_mode_strings() -> None:
    assert mode_string(0o755) == "rwxr-xr-x"
    assert mode_string(0o644) == "rw-r--r--"
    assert mode_string(0o4755) == "rwsr-xr-x"
    assert mode_string(0o2750) == "rwxr-s---"
    assert mode_string(0o1777) == "rwxrwxrwt"
    assert mode_string(0o1776) == "rwxrwxrwT"
    assert mode_string(0) == "---------"


def test_big_listing_parses() -> None:
    lines = [
        f"-rw-r--r--   1 user group {i * 7:>10} Jan {i % 28 + 1:>2} 14:02 file {i:05}.txt"
        for i in range(10_000)
    ]
    entries = parse_listing("\r\n".join(lines).encode(), mlsd=False, now=NOW)
    assert len(entries) == 10_000
    assert entries[-1].name == "file 09999.txt"
    assert entries[-1].size == 9999 * 7


# --------------------------------------------------------------------------- replies


def test_reply_table_covers_the_codes_users_meet() -> None:
    required = [
        110, 120, 125, 150, 200, 202, 211, 212, 213, 214, 215, 220, 221, 225, 226, 227,
        229, 230, 234, 250, 257, 331, 332, 350, 421, 425, 426, 450, 451, 452, 500, 501,
        502, 503, 504, 522, 530, 532, 534, 550, 551, 552, 553,
    ]  # fmt: skip
    for code in required:
        assert code in replies.REPLIES, code
    for code, text in replies.REPLIES.items():
        assert 100 <= code < 700
        assert text and text[0].isupper() and text.endswith("."), code


@pytest.mark.parametrize(
    ("code", "phrase"),
    [
        (421, "closing"),
        (425, "could not open the data connection"),
        (426, "transfer was aborted"),
        (450, "unavailable"),
        (451, "local error"),
        (452, "out of space"),
        (501, "arguments"),
        (504, "option"),
        (530, "login refused"),
        (532, "account"),
        (534, "tls"),
        (550, "does not exist"),
        (550, "permission"),
        (552, "quota"),
        (553, "file name is not allowed"),
        (226, "finished successfully"),
        (331, "password"),
    ],
)
def test_reply_explanations(code: int, phrase: str) -> None:
    assert phrase in replies.explain(code).lower()


def test_reply_fallbacks() -> None:
    assert replies.explain(None) == ""
    assert "later" in replies.explain(499)
    assert "refused" in replies.explain(599)
    assert replies.explain(299)
    assert replies.is_transient(421) and replies.is_transient(452)
    assert not replies.is_transient(550) and not replies.is_transient(None)
