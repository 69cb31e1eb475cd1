"""Directory listings: MLSD (RFC 3659) and LIST in the formats servers really send.

Pure functions, no I/O. LIST has no standard: this parses what FileZilla's parser meets in
practice —
- Unix ``ls -l`` style, with or without the group column, numeric owners, an ACL or
  SELinux marker after the mode (``-rw-r--r--+``), symlinks ``name -> target``, device
  files (``1, 3`` instead of a size), the ``total 12`` line, dates as ``Jan 12 14:02``
  (year-less: the year is the one that puts the date no more than a day in the future),
  ``Jan 12  2019``, ``12 Jan 14:02`` (day first), ``Jan 12 14:02:33 2019`` (``ls -T``) and
  ``2019-01-12 14:02`` (``--time-style=long-iso``);
- DOS/IIS: ``01-12-19  02:02PM  <DIR>  name`` with AM/PM or 24-hour times, 2- or 4-digit
  years (00-69 mean 20xx), ``-``, ``/`` or ``.`` separators, optional thousands commas;
- EPLF: ``+i8388621.48594,m825718503,r,s280,\\tname``.

Names: everything after the single space that ends the date is the name, so names with
spaces, leading spaces and any script survive (DOS ``<DIR>`` lines pad the name column, so
there leading spaces cannot be told from padding and are dropped, as FileZilla does).
Lines are bytes in the site's encoding; undecodable bytes become lone surrogates
(``surrogateescape``) and ``Entry.raw_name`` keeps the exact bytes, so such a name can be
sent back to the server unchanged.

Times: MLSD and EPLF times are UTC by definition. LIST times are the server's local time,
which the protocol does not reveal; they are taken as UTC (pyftpdlib, vsftpd and most
hosting servers list in UTC). Every ``modified`` is an aware UTC datetime or None.

A line that fits no format is skipped; one odd line never loses the rest of the listing.
Names that could address another path (containing "/", CR or NUL; "." and "..") are dropped
(remote text is hostile: delete_tree joins these names to paths).
Directory sizes are reported as None (they are block sizes, not content sizes).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

__all__ = [
    "Entry",
    "decode_name",
    "encode_name",
    "mode_string",
    "parse_list_line",
    "parse_listing",
    "parse_mlsd_line",
]

FILE, DIR, LINK = "file", "dir", "link"


@dataclass(frozen=True)
class Entry:
    """One directory entry, as the UI and API show it."""

    name: str
    type: str  # "file" | "dir" | "link"
    size: int | None
    modified: datetime | None  # aware UTC when known
    permissions: str | None  # "rwxr-xr-x", or MLSD perm facts such as "adfrw"
    target: str | None = None  # symlink target, when the server says
    raw_name: bytes = field(default=b"", repr=False)  # the name exactly as the server sent it


# --------------------------------------------------------------------------- names


def decode_name(raw: bytes, encoding: str = "utf-8") -> str:
    """Bytes from the server as text; undecodable bytes become lone surrogates."""
    return raw.decode(encoding, "surrogateescape")


def encode_name(name: str, encoding: str = "utf-8") -> bytes:
    """The inverse of ``decode_name`` (raises UnicodeEncodeError for unmappable text)."""
    return name.encode(encoding, "surrogateescape")


def mode_string(mode: int) -> str:
    """0o754 -> "rwxr-xr--" (with s/S/t/T for setuid, setgid and sticky bits)."""
    chars = []
    for shift, special, letter in ((6, 0o4000, "s"), (3, 0o2000, "s"), (0, 0o1000, "t")):
        bits = (mode >> shift) & 7
        chars.append("r" if bits & 4 else "-")
        chars.append("w" if bits & 2 else "-")
        if mode & special:
            chars.append(letter if bits & 1 else letter.upper())
        else:
            chars.append("x" if bits & 1 else "-")
    return "".join(chars)


# --------------------------------------------------------------------------- MLSD


def _mlsd_time(value: str) -> datetime | None:
    match = re.fullmatch(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d{1,6})\d*)?", value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micro = int((match.group(7) or "0").ljust(6, "0"))
    try:
        return datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=UTC)
    except ValueError:
        return None


def _octal_mode(value: str) -> int | None:
    text = value.strip().lower()
    if text.startswith("0o"):
        text = text[2:]
    if not text or not re.fullmatch(r"[0-7]{1,6}", text):
        return None
    return int(text, 8) & 0o7777


def parse_mlsd_line(line: bytes | str, encoding: str = "utf-8") -> Entry | None:
    """One MLSD line (``fact=value;...; name``); None for cdir/pdir and malformed lines."""
    text = line if isinstance(line, str) else decode_name(line, encoding)
    text = text.rstrip("\r\n")
    facts_text, sep, name = text.partition(" ")
    if not sep or not name or "=" not in facts_text:
        return None
    facts: dict[str, str] = {}
    for fact in facts_text.split(";"):
        key, eq, value = fact.partition("=")
        if eq:
            facts[key.strip().lower()] = value
    kind_text = facts.get("type", "").lower()
    target = None
    if kind_text in ("cdir", "pdir") or name in (".", ".."):
        return None
    if kind_text == "file":
        kind = FILE
    elif kind_text == "dir":
        kind = DIR
    elif kind_text.startswith("os.unix=slink") or kind_text.startswith("os.unix=symlink"):
        kind = LINK
        # "OS.unix=slink:/target" names the target (keep its original case).
        original = facts.get("type", "")
        if ":" in original:
            target = original.split(":", 1)[1] or None
    elif kind_text.startswith("os.unix="):
        kind = FILE  # devices, sockets, fifos: shown as files
    else:
        return None
    size = None
    if kind != DIR:
        for key in ("size", "sizd"):
            if facts.get(key, "").isdigit():
                size = int(facts[key])
                break
    mode = _octal_mode(facts.get("unix.mode", ""))
    if mode is not None:
        permissions: str | None = mode_string(mode)
    else:
        permissions = facts.get("perm") or None
    modified = _mlsd_time(facts.get("modify", ""))
    return Entry(
        name=name,
        type=kind,
        size=size,
        modified=modified,
        permissions=permissions,
        target=target,
        raw_name=_raw(name, encoding),
    )


def _raw(name: str, encoding: str) -> bytes:
    """The name's bytes as the server sent them (surrogateescape makes this exact)."""
    try:
        return encode_name(name, encoding)
    except UnicodeEncodeError:  # a str line with characters the site encoding lacks
        return name.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- LIST

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "janv", "jän", "jaen"),
            ("feb", "fév", "fev", "févr"),
            ("mar", "mär", "mrz", "mars"),
            ("apr", "avr"),
            ("may", "mai", "mag"),
            ("jun", "juin"),
            ("jul", "juil"),
            ("aug", "aoû", "aou"),
            ("sep", "sept"),
            ("oct", "okt"),
            ("nov",),
            ("dec", "déc", "dez"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = r"(?P<mon>[^\W\d_]{3,4})\.?"
_DAY = r"(?P<day>\d{1,2})"
_CLOCK_OR_YEAR = (
    r"(?:(?P<hm>\d{1,2}:\d\d)(?::(?P<sec>\d\d))?(?:\s+(?P<year2>\d{4}))?|(?P<year>\d{4}))"
)
_DATES = (
    # Jan 12 14:02 / Jan 12  2019 / Jan 12 14:02:33 2019
    rf"{_MONTH}\s+{_DAY}\s+{_CLOCK_OR_YEAR}",
    # 12 Jan 14:02 / 12 Jan  2019
    rf"{_DAY}\s+{_MONTH}\s+{_CLOCK_OR_YEAR}",
    # 2019-01-12 14:02[:33[.123456789]] [+0000]
    r"(?P<iy>\d{4})-(?P<im>\d\d)-(?P<id>\d\d)\s+(?P<ihm>\d\d:\d\d)(?::(?P<isec>\d\d)(?:\.\d+)?)?"
    r"(?:\s+[+-]\d{4})?",
)
_UNIX_HEAD = re.compile(r"(?P<kind>[-bcdlpsDnw?])(?P<perms>[-rwxsStTlL]{9})[+.@*]?\s+(?P<rest>.*)")
_UNIX_TAILS = tuple(
    re.compile(
        rf"(?:(?P<mid>.*?)\s+)??(?P<size>\d+|\d+,\s*\d+)\s+{date}\s(?P<name>.+)",
        re.IGNORECASE,
    )
    for date in _DATES
)
_DOS = re.compile(
    r"(?P<date>\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4})\s+"
    r"(?P<time>\d{1,2}:\d\d(?::\d\d)?)\s*(?P<ampm>[AaPp][Mm])?\s+"
    r"(?:(?P<dir><DIR>)\s+(?P<dname>.+)|(?P<size>\d[\d,]*)\s(?P<fname>.+))"
)


def _year_for(month: int, day: int, hour: int, minute: int, now: datetime) -> int | None:
    """ls omits the year for recent dates: the latest year that is not in the future
    (a day of slack for clock skew and time zones; Feb 29 goes back to a leap year)."""
    for year in range(now.year, now.year - 8, -1):
        try:
            candidate = datetime(year, month, day, hour, minute, tzinfo=UTC)
        except ValueError:  # Feb 29 in a non-leap year
            continue
        if candidate <= now + timedelta(days=1):
            return year
    return None


def _unix_date(match: re.Match[str], now: datetime) -> datetime | None:
    groups = match.groupdict()
    if groups.get("iy"):
        year, month, day = int(groups["iy"]), int(groups["im"]), int(groups["id"])
        hour, minute = (int(x) for x in groups["ihm"].split(":"))
        second = int(groups.get("isec") or 0)
    else:
        month = _MONTHS.get(groups["mon"].lower())
        if month is None:
            return None
        day = int(groups["day"])
        second = 0
        if groups.get("year"):
            year = int(groups["year"])
            hour = minute = 0
        else:
            hour, minute = (int(x) for x in groups["hm"].split(":"))
            second = int(groups.get("sec") or 0)
            if groups.get("year2"):
                year = int(groups["year2"])
            else:
                guessed = _year_for(month, day, hour, minute, now)
                if guessed is None:
                    return None
                year = guessed
    try:
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except ValueError:
        return None


_Parsed = tuple[str, str, int | None, datetime | None, str | None, str | None]


def _parse_unix(text: str, now: datetime) -> _Parsed | None:
    head = _UNIX_HEAD.fullmatch(text)
    if head is None:
        return None
    rest = head.group("rest")
    for tail_pattern in _UNIX_TAILS:
        tail = tail_pattern.fullmatch(rest)
        if tail is None:
            continue
        if tail.groupdict().get("mon") and tail.group("mon").lower() not in _MONTHS:
            continue
        modified = _unix_date(tail, now)  # None for an impossible date: keep the entry
        kind_char = head.group("kind")
        name = tail.group("name")
        target = None
        if kind_char == "d":
            kind = DIR
        elif kind_char == "l":
            kind = LINK
            if " -> " in name:
                name, target = name.split(" -> ", 1)
        else:
            kind = FILE
        size_text = tail.group("size")
        # Devices show "major, minor"; fifos and sockets a meaningless 0.
        size = int(size_text) if size_text.isdigit() and kind_char in "-l" else None
        return name, kind, size, modified, head.group("perms"), target
    return None


def _parse_dos(text: str) -> tuple[str, str, int | None, datetime | None] | None:
    match = _DOS.fullmatch(text)
    if match is None:
        return None
    parts = [int(p) for p in re.split(r"[-/.]", match.group("date"))]
    if parts[0] > 31:  # 2019-01-12
        year, month, day = parts
    else:  # 01-12-19 (US order, as IIS sends)
        month, day, year = parts
        if month > 12 >= day:  # 25-12-2019: a day-first server
            month, day = day, month
    if year < 100:
        year += 2000 if year < 70 else 1900
    clock = [int(p) for p in match.group("time").split(":")]
    hour, minute = clock[0], clock[1]
    second = clock[2] if len(clock) > 2 else 0
    ampm = (match.group("ampm") or "").upper()
    if ampm == "AM" and hour == 12:
        hour = 0
    elif ampm == "PM" and hour < 12:
        hour += 12
    try:
        modified: datetime | None = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        modified = None
    if match.group("dir"):
        return match.group("dname").lstrip(), DIR, None, modified
    return match.group("fname"), FILE, int(match.group("size").replace(",", "")), modified


def _parse_eplf(text: str) -> tuple[str, str, int | None, datetime | None, str | None] | None:
    if not text.startswith("+") or "\t" not in text:
        return None
    facts, name = text[1:].split("\t", 1)
    if not name:
        return None
    kind, size, modified, permissions = None, None, None, None
    for fact in facts.split(","):
        if fact == "/":
            kind = DIR
        elif fact == "r":
            kind = kind or FILE
        elif fact.startswith("s") and fact[1:].isdigit():
            size = int(fact[1:])
        elif fact.startswith("m") and fact[1:].isdigit():
            modified = datetime.fromtimestamp(int(fact[1:]), UTC)
        elif fact.startswith("up"):
            mode = _octal_mode(fact[2:])
            permissions = mode_string(mode) if mode is not None else None
    if kind is None:
        return None
    return name, kind, (None if kind == DIR else size), modified, permissions


def parse_list_line(
    line: bytes | str, encoding: str = "utf-8", *, now: datetime | None = None
) -> Entry | None:
    """One LIST line in any known format; None for "total" lines, blanks and unknown lines."""
    text = line if isinstance(line, str) else decode_name(line, encoding)
    text = text.rstrip("\r\n")
    if not text.strip() or re.match(r"total\s+\d+", text, re.IGNORECASE):
        return None
    now = now or datetime.now(UTC)
    text = text.lstrip(" \t")  # some servers indent; the name is at the end, never here
    unix = _parse_unix(text, now)
    if unix is not None:
        name, kind, size, modified, permissions, target = unix
        if name in (".", ".."):
            return None
        return Entry(name, kind, size, modified, permissions, target, _raw(name, encoding))
    dos = _parse_dos(text)
    if dos is not None:
        name, kind, size, modified = dos
        if name in (".", ".."):
            return None
        return Entry(name, kind, size, modified, None, None, _raw(name, encoding))
    eplf = _parse_eplf(text)
    if eplf is not None:
        name, kind, size, modified, permissions = eplf
        return Entry(name, kind, size, modified, permissions, None, _raw(name, encoding))
    return None


def _lines(data: bytes) -> Iterable[bytes]:
    for line in data.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            yield line


def parse_listing(
    data: bytes,
    *,
    mlsd: bool,
    encoding: str = "utf-8",
    now: datetime | None = None,
    only: Collection[str] | None = None,
) -> list[Entry]:
    """A whole MLSD or LIST reply body; odd lines are skipped, "." and ".." dropped.
    ``only``: just the entries of these names (an MLSD line of another name is not even
    parsed: checking a few files in a big folder stays cheap)."""
    now = now or datetime.now(UTC)
    entries: list[Entry] = []
    seen: set[str] = set()
    for line in _lines(data):
        if only is not None and mlsd:
            name = line.partition(b" ")[2].rstrip(b"/").rsplit(b"/", 1)[-1]
            if decode_name(name, encoding) not in only:
                continue
        try:
            if mlsd:
                entry = parse_mlsd_line(line, encoding)
            else:
                entry = parse_list_line(line, encoding, now=now)
        except Exception:  # noqa: S112 — never lose a listing to one line we did not foresee
            continue
        if entry is None:
            continue
        if "/" in entry.name and mlsd:
            # Some servers put whole paths in MLSD; the entry is the last component.
            name = entry.name.rstrip("/").rsplit("/", 1)[-1]
            entry = replace(entry, name=name, raw_name=_raw(name, encoding))
        if not entry.name or entry.name in (".", "..") or any(c in entry.name for c in "/\r\0"):
            continue  # hostile or broken: such a name could address another path
        if entry.name in seen or (only is not None and entry.name not in only):
            continue
        seen.add(entry.name)
        entries.append(entry)
    return entries
