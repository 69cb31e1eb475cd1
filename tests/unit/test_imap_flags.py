"""Which flags a folder keeps (SELECT's FLAGS and PERMANENTFLAGS, RFC 3501 7.1): $Forwarded is
set only where it would be kept."""

from __future__ import annotations

from mailcore.protocols.imap import SelectResult, _permanent_flags

SYSTEM = frozenset({"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"})


def selection(flags=SYSTEM, permanent=None) -> SelectResult:
    return SelectResult(
        uidvalidity=1,
        uidnext=1,
        exists=0,
        highestmodseq=None,
        flags=flags,
        permanent_flags=permanent,
    )


def test_new_keywords_are_kept_where_permanentflags_has_the_wildcard():
    kept = selection(permanent=_permanent_flags({"PERMANENTFLAGS": "(\\Answered \\Seen \\*)"}))
    assert kept.keeps("$Forwarded") and kept.keeps("\\Answered")
    assert not kept.keeps("\\Flagged")  # a system flag is never covered by \*


def test_without_the_wildcard_only_listed_keywords_are_kept():
    listed = selection(permanent=_permanent_flags({"PERMANENTFLAGS": "(\\Answered $Forwarded)"}))
    assert listed.keeps("$Forwarded") and not listed.keeps("$Junk")
    assert not selection(permanent=_permanent_flags({"PERMANENTFLAGS": "()"})).keeps("$Forwarded")


def test_without_permanentflags_the_folder_keeps_what_flags_lists():
    assert _permanent_flags({}) is None
    assert not selection().keeps("$Forwarded")
    assert selection(flags=SYSTEM | {"$Forwarded"}).keeps("$Forwarded")
