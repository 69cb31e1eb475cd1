"""How a saved attachment is named when the name is taken (mailcore/ftp_bridge.free_name)."""

import pytest

from mailcore.ftp_bridge import free_name


@pytest.mark.parametrize(
    ("name", "taken", "expected"),
    [
        ("report.pdf", set(), "report.pdf"),
        ("report.pdf", {"report.pdf"}, "report (1).pdf"),
        ("Report.PDF", {"report.pdf", "report (1).pdf"}, "Report (2).PDF"),
        ("backup.tar.gz", {"backup.tar.gz"}, "backup (1).tar.gz"),
        ("README", {"readme"}, "README (1)"),
        (".profile", {".profile"}, ".profile (1)"),
    ],
)
def test_free_name(name, taken, expected):
    assert free_name(name, taken) == expected
