"""The file manager in Chromium against a real pyftpdlib server: browsing by keyboard,
sorting, filtering, folder and file actions, uploads with progress, downloads, previews,
editing, the server's refusals, phones. Every effect is checked on the server's disk."""

from __future__ import annotations

import hashlib
import re
import struct
import threading
import zipfile
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from playwright.sync_api import expect
from pyftpdlib.handlers import ThrottledDTPHandler

from ftpcore import services, transfers
from ftpcore.models import FtpSite
from tests.peers.fixtures import ftp_peer
from tests.peers.ftp import FTPServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


def _png(width: int = 320, height: int = 200) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(
        b"\0" + b"".join(bytes([x * 255 // width, y * 255 // height, 200]) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _log_in(page) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("secret-alice")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".topbar")).to_be_visible()


def _site(owner, server, **fields) -> FtpSite:
    values = {
        "name": "Test server",
        "host": server.host,
        "port": server.port,
        "username": "alice",
        "password": "secret-alice",
    }
    return services.site_create(owner=owner, **{**values, **fields})


def _row(page, name: str):
    return page.locator(f'#file-rows tr.file-row[data-name="{name}"]')


def _names(page) -> list[str]:
    return page.locator("#file-rows tr.file-row").evaluate_all(
        "rows => rows.map(r => r.dataset.name)"
    )


def _open(page, site, path: str = "") -> None:
    page.goto(f"/files/?site={site.pk}" + (f"&path={path}" if path else ""))
    expect(page.locator("#folder-loading")).to_be_hidden()


@pytest.fixture
def home(ftp):
    root = ftp.homes["alice"]
    (root / "docs").mkdir()
    (root / "docs" / "inner.txt").write_bytes(b"inside docs\n")
    (root / "music").mkdir()
    (root / "a.txt").write_bytes(b"0123456789")
    (root / "big.bin").write_bytes(b"\0" * 5000)
    (root / "report.pdf").write_bytes(b"%PDF" + b"x" * 296)
    return root


def test_empty_state_then_add_a_site(page, screenshot, alice, ftp):
    _log_in(page)
    page.goto("/files/")
    expect(page.get_by_role("heading", name="No FTP sites yet")).to_be_visible()
    screenshot("files-empty")
    page.get_by_role("link", name="Add an FTP site").click()
    expect(page.get_by_role("heading", name="Add an FTP site")).to_be_visible()
    port = page.locator("#id_port")
    page.locator("#id_security").select_option("implicit_tls")
    expect(port).to_have_value("990")
    page.locator("#id_security").select_option("none")
    expect(port).to_have_value("21")
    page.locator("#id_host").fill(ftp.host)
    port.fill(str(ftp.port))
    page.locator("#id_name").fill("My server")
    page.locator("#id_username").fill("alice")
    page.locator("#id_password").fill("secret-alice")
    screenshot("files-site-form")
    page.get_by_role("button", name="Add site").click()
    expect(page.locator("#files-app")).to_be_visible()
    expect(page.locator("#folder-empty")).to_be_visible()
    expect(page.get_by_text("This folder is empty")).to_be_visible()


def test_test_connection_refusal_in_plain_words(page, alice, ftp):
    _site(alice, ftp, password="wrong")
    _log_in(page)
    page.goto("/files/sites/")
    page.get_by_role("button", name="Test connection").click()
    result = page.locator(".check-result")
    expect(result).to_contain_text("530")
    expect(result).to_contain_text("— Login refused: wrong user name or password")


def test_browse_by_keyboard_breadcrumbs_sort_and_filter(page, screenshot, alice, ftp, home):
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    assert _names(page) == ["docs", "music", "a.txt", "big.bin", "report.pdf"]
    expect(page.locator("#status")).to_have_text("5 items")
    page.keyboard.press("ArrowDown")
    expect(_row(page, "docs")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Enter")
    expect(page.locator("#breadcrumbs [aria-current]")).to_have_text("docs")
    expect(_row(page, "inner.txt")).to_be_visible()
    assert "path=%2Fdocs" in page.url
    page.keyboard.press("Backspace")
    expect(_row(page, "docs")).to_have_attribute("aria-selected", "true")  # where we came from
    page.keyboard.press("Enter")
    expect(_row(page, "inner.txt")).to_be_visible()
    page.locator("#breadcrumbs a.crumb").first.click()
    expect(_row(page, "a.txt")).to_be_visible()

    page.get_by_role("button", name="Sort by size").click()  # largest first, folders stay first
    expect(page.locator("th.col-size")).to_have_attribute("aria-sort", "descending")
    assert _names(page) == ["docs", "music", "big.bin", "report.pdf", "a.txt"]
    page.get_by_role("button", name="Sort by size").click()
    assert _names(page) == ["docs", "music", "a.txt", "report.pdf", "big.bin"]
    page.get_by_role("button", name="Sort by name").click()

    page.keyboard.press("/")
    expect(page.locator("#filter")).to_be_focused()
    page.keyboard.type("rep")
    expect(page.locator("#file-rows tr.file-row")).to_have_count(1)
    expect(page.locator("#status")).to_have_text("1 of 5 shown")
    page.keyboard.press("Escape")
    expect(page.locator("#file-rows tr.file-row")).to_have_count(5)
    _row(page, "a.txt").locator(".col-size").click()
    screenshot("files-browser")


def test_new_folder_rename_move_and_delete(page, alice, ftp, home):
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    page.get_by_role("button", name="New folder").click()
    page.locator("#dialog-input").fill("photos")
    page.keyboard.press("Enter")
    expect(_row(page, "photos")).to_have_attribute("aria-selected", "true")
    assert (home / "photos").is_dir()

    _row(page, "a.txt").locator(".col-size").click()
    page.keyboard.press("F2")
    expect(page.locator("#dialog-title")).to_have_text("Rename a.txt")
    page.locator("#dialog-input").fill("renamed.txt")
    page.locator("#dialog-ok").click()
    expect(_row(page, "renamed.txt")).to_be_visible()
    assert (home / "renamed.txt").read_bytes() == b"0123456789"
    assert not (home / "a.txt").exists()

    # Drag a file onto a folder row: moved into it.
    _row(page, "renamed.txt").drag_to(_row(page, "photos"))
    expect(_row(page, "renamed.txt")).to_have_count(0)
    assert (home / "photos" / "renamed.txt").exists()

    # Move… by prompt.
    _row(page, "report.pdf").locator(".col-size").click()
    page.get_by_role("button", name="Move…").click()
    page.locator("#dialog-input").fill("/music")
    page.locator("#dialog-ok").click()
    expect(_row(page, "report.pdf")).to_have_count(0)
    assert (home / "music" / "report.pdf").exists()

    # Delete two (one a non-empty folder) with the count in the confirmation.
    _row(page, "photos").locator(".col-size").click()
    _row(page, "big.bin").locator(".col-size").click(modifiers=["Control"])
    page.keyboard.press("Delete")
    expect(page.locator("#dialog-title")).to_have_text("Delete 2 items?")
    expect(page.locator("#dialog-text")).to_contain_text(
        "1 folder will be deleted with everything inside"
    )
    page.locator("#dialog-ok").click()
    expect(_row(page, "photos")).to_have_count(0)
    expect(_row(page, "big.bin")).to_have_count(0)
    assert not (home / "photos").exists()
    assert not (home / "big.bin").exists()


def test_chmod_with_octal_and_checkboxes(page, alice, ftp, home):
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    _row(page, "a.txt").locator(".col-size").click()
    page.locator("#act-chmod").click()
    octal = page.locator("#chmod-octal")
    octal.fill("640")
    expect(page.get_by_label("Group read")).to_be_checked()
    expect(page.get_by_label("Others read")).not_to_be_checked()
    page.get_by_label("Owner execute").check()
    expect(octal).to_have_value("740")
    page.locator("#dialog-ok").click()
    expect(page.locator("#toasts")).to_contain_text("a.txt is now 740.")
    assert (home / "a.txt").stat().st_mode & 0o777 == 0o740
    expect(_row(page, "a.txt").locator(".col-perms")).to_have_text(re.compile("rwxr-----"))


def test_upload_two_files_and_download(page, alice, ftp, home):
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    first = b"first file\n" * 1000
    second = bytes(range(256)) * 400
    page.locator("#upload-input").set_input_files(
        [
            {"name": "one.txt", "mimeType": "text/plain", "buffer": first},
            {"name": "two.bin", "mimeType": "application/octet-stream", "buffer": second},
        ]
    )
    transfers = page.locator("#transfer-list .transfer")
    expect(transfers).to_have_count(2)
    expect(page.locator("#transfer-list .state.done")).to_have_count(2)
    expect(page.locator("#transfer-list .progress").first).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#transfer-summary")).to_contain_text("2 uploaded")
    expect(_row(page, "two.bin")).to_be_visible()
    assert (home / "one.txt").read_bytes() == first
    assert (home / "two.bin").read_bytes() == second

    href = _row(page, "two.bin").locator("a.file-name").get_attribute("href")
    response = page.request.get(href)
    assert response.status == 200
    assert response.body() == second


def test_many_small_files_share_posts_and_a_refused_batch_gives_each_file_its_result(
    page, alice, ftp, home
):
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    files = [
        {"name": f"n{i:03d}.txt", "mimeType": "text/plain", "buffer": f"file {i}\n".encode()}
        for i in range(120)
    ]
    page.locator("#upload-input").set_input_files(files)
    expect(page.locator("#transfer-list .state.done")).to_have_count(120)
    assert len([url for url in posts if "/upload/" in url]) == 2  # 100 + 20
    assert all((home / f"n{i:03d}.txt").read_bytes() == f"file {i}\n".encode() for i in range(120))

    # One reserved name fails its batch: every file is then sent alone, so the others
    # are stored and only that one shows the server's refusal.
    page.locator("#transfers-clear").click()
    posts.clear()
    page.locator("#upload-input").set_input_files(
        [
            {"name": "a.txt", "mimeType": "text/plain", "buffer": b"a"},
            {"name": "b.part-satchel", "mimeType": "text/plain", "buffer": b"b"},
            {"name": "c.txt", "mimeType": "text/plain", "buffer": b"c"},
        ]
    )
    expect(page.locator("#transfer-list .state.done")).to_have_count(2)
    failed = page.locator("#transfer-list .transfer.failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("b.part-satchel")
    expect(failed.locator(".transfer-error")).to_contain_text("reserved")
    assert len([url for url in posts if "/upload/" in url]) == 4  # the batch, then 3 alone
    assert (home / "a.txt").read_bytes() == b"a" and (home / "c.txt").read_bytes() == b"c"
    assert not (home / "b.part-satchel").exists()


def test_preview_image_and_text_then_edit(page, screenshot, alice, ftp, home):
    (home / "pic.png").write_bytes(_png())
    (home / "notes.txt").write_bytes(b"<b>not html</b>\nline two\n")
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    _row(page, "notes.txt").locator(".col-size").click()
    page.keyboard.press(" ")
    pre = page.locator("#preview-body pre")
    expect(pre).to_have_text("<b>not html</b>\nline two\n")
    assert page.locator("#preview-body b").count() == 0

    page.get_by_role("button", name="Edit").click()
    editor = page.locator("#preview-editor")
    editor.fill("edited\nby satchel\n")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#preview-body pre")).to_have_text("edited\nby satchel\n")
    assert (home / "notes.txt").read_bytes() == b"edited\nby satchel\n"

    _row(page, "pic.png").locator(".col-size").click()  # the open preview follows
    image = page.locator("#preview-body img.preview-image")
    expect(image).to_be_visible()
    page.wait_for_function(
        "() => document.querySelector('#preview-body img')?.naturalWidth === 320"
    )
    screenshot("files-preview")
    page.keyboard.press("Escape")
    expect(page.locator("#preview")).to_be_hidden()


def test_a_550_is_a_toast_with_its_explanation(page, alice, ftp, home):
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    (home / "a.txt").unlink()  # gone behind the browser's back
    _row(page, "a.txt").locator(".col-size").click()
    page.keyboard.press("Delete")
    page.locator("#dialog-ok").click()
    toast = page.locator("#toasts .toast.failed")
    expect(toast).to_contain_text("550")
    expect(toast).to_contain_text(
        "— The file or folder is unavailable: it does not exist, or you do not have permission"
    )


def test_ten_thousand_entries_render_a_window(page, alice, ftp):
    root = ftp.homes["alice"]
    for i in range(10_000):
        (root / f"file-{i:05d}.dat").touch()
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    expect(page.locator("#status")).to_have_text("10000 items", timeout=30_000)
    assert page.locator("#file-rows tr.file-row").count() <= 300
    page.keyboard.press("End")
    expect(_row(page, "file-09999.dat")).to_have_attribute("aria-selected", "true")
    assert page.locator("#file-rows tr.file-row").count() <= 300
    page.keyboard.press("/")
    page.keyboard.type("file-0500")
    expect(page.locator("#file-rows tr.file-row")).to_have_count(10)


def test_phone_width(page, screenshot, alice, ftp, home):
    site = _site(alice, ftp)
    page.set_viewport_size(PHONE)
    _log_in(page)
    _open(page, site)
    expect(_row(page, "a.txt")).to_be_visible()
    expect(_row(page, "a.txt").locator(".col-modified")).to_be_hidden()
    expect(_row(page, "a.txt").locator(".col-perms")).to_be_hidden()
    expect(_row(page, "a.txt").locator(".col-size")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    screenshot("files-phone")


def test_upload_a_folder_creates_its_folders(page, alice, ftp, home, tmp_path):
    source = tmp_path / "album"
    (source / "2024").mkdir(parents=True)
    (source / "cover.txt").write_bytes(b"cover")
    (source / "2024" / "track.bin").write_bytes(b"\x01" * 2048)
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    page.locator("#upload-folder-input").set_input_files(str(source))
    expect(page.locator("#transfer-list .state.done")).to_have_count(2)
    expect(_row(page, "album")).to_be_visible()
    assert (home / "album" / "cover.txt").read_bytes() == b"cover"
    assert (home / "album" / "2024" / "track.bin").read_bytes() == b"\x01" * 2048


def test_drop_files_from_the_desktop(page, alice, ftp, home):
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    page.evaluate(
        """() => {
          const transfer = new DataTransfer();
          transfer.items.add(new File(["dropped one"], "drop1.txt"));
          transfer.items.add(new File(["dropped two"], "drop2.txt"));
          const target = document.querySelector('#file-rows tr[data-name="docs"]');
          for (const type of ["dragenter", "dragover", "drop"]) {
            const init = {bubbles: true, cancelable: true, dataTransfer: transfer};
            target.dispatchEvent(new DragEvent(type, init));
          }
        }"""
    )
    expect(page.locator("#transfer-list .state.done")).to_have_count(2)
    assert (home / "docs" / "drop1.txt").read_bytes() == b"dropped one"
    assert (home / "docs" / "drop2.txt").read_bytes() == b"dropped two"
    expect(page.locator("#drop-overlay")).to_be_hidden()


def test_download_a_folder_as_a_zip(page, alice, ftp, home):
    (home / "docs" / "sub folder").mkdir()
    (home / "docs" / "sub folder" / "été.txt").write_bytes("été\n".encode())
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    _row(page, "docs").locator(".col-size").click()
    with page.expect_download() as info:
        page.get_by_role("button", name="Download", exact=True).click()
    download = info.value
    assert download.suggested_filename == "docs.zip"
    archive = zipfile.ZipFile(download.path())
    assert archive.read("docs/inner.txt") == b"inside docs\n"
    assert archive.read("docs/sub folder/été.txt") == "été\n".encode()


def test_a_large_upload_goes_in_chunks_and_survives_a_dropped_chunk(
    page, screenshot, alice, ftp, home
):
    data = hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32 + 7)  # ~20 MiB
    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    chunks: list[str] = []

    def drop_the_second(route) -> None:
        chunks.append(route.request.url)
        if len(chunks) == 2:
            route.abort("connectionreset")  # the network dropped it: nothing reached Satchel
        else:
            route.continue_()

    page.route(re.compile(r"/uploads/\d+/\?offset=\d+$"), drop_the_second)
    page.locator("#upload-input").set_input_files(
        [{"name": "large.bin", "mimeType": "application/octet-stream", "buffer": data}]
    )
    expect(page.locator("#transfer-list .state")).to_have_text("reconnecting")
    screenshot("files-upload-reconnecting")
    expect(page.locator("#transfer-list .state.done")).to_have_count(1, timeout=60_000)
    assert (home / "large.bin").read_bytes() == data
    offsets = [int(url.rsplit("=", 1)[1]) for url in chunks]
    assert offsets == [0, 8 * 1024 * 1024, 8 * 1024 * 1024, 16 * 1024 * 1024]  # resent once
    assert not [p.name for p in home.iterdir() if "part" in p.name]


def test_background_download_and_copy_progress_live(
    page, screenshot, alice, ftp, home, celery_worker
):
    payload = bytes(range(256)) * (12 * 1024 * 4)  # 12 MiB
    (home / "movie.bin").write_bytes(payload)
    site = _site(alice, ftp)
    _site(alice, ftp, name="Backup", initial_path="/music")
    _log_in(page)
    _open(page, site)

    _row(page, "movie.bin").locator(".col-size").click()
    page.keyboard.press("b")  # download in background
    panel = page.locator("#bg-transfers")
    expect(panel).to_be_visible()
    row = panel.locator(".bg-row").first
    expect(row).to_contain_text("movie.bin")
    expect(row.locator(".state")).to_have_text("done", timeout=60_000)  # live, no reload
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(row).to_contain_text("12 MB of 12 MB")
    response = page.request.get(
        row.get_by_role("link", name="Save movie.bin").get_attribute("href")
    )
    assert response.status == 200 and response.body() == payload

    # Copy to another site, choosing the folder in the picker by keyboard.
    _row(page, "a.txt").locator(".col-size").click()
    page.keyboard.press("c")
    expect(page.locator("#dialog-title")).to_have_text("Copy a.txt")
    expect(page.locator("#copy-site")).to_have_value(str(FtpSite.objects.get(name="Backup").pk))
    expect(page.locator("#copy-folder")).to_have_value("/music")
    page.locator("#copy-folder").fill("/")
    page.get_by_role("button", name="Into docs").click()
    expect(page.locator("#copy-folder")).to_have_value("/docs")
    expect(page.locator("#copy-folders").get_by_role("button", name="Up to /")).to_be_visible()
    expect(page.locator("#copy-folders")).not_to_have_attribute("aria-busy", "true")
    screenshot("files-copy-dialog")
    page.keyboard.press("Enter")
    copy = panel.locator(".bg-row").first
    expect(copy).to_contain_text("Backup /docs/")
    expect(copy.locator(".state")).to_have_text("done", timeout=60_000)
    assert (home / "docs" / "a.txt").read_bytes() == b"0123456789"

    # A copy the server refuses: failed, in the server's words, and Retry is offered.
    (home / "locked").mkdir()
    ftp.authorizer.override_perm("alice", str(home / "locked"), "elr")  # no STOR there
    try:
        _row(page, "report.pdf").locator(".col-size").click()
        page.keyboard.press("c")
        page.locator("#copy-folder").fill("/locked")
        page.locator("#dialog-ok").click()
        failed = panel.locator(".bg-row").first
        expect(failed.locator(".state")).to_have_text("failed", timeout=60_000)
        expect(failed.locator(".transfer-error")).to_contain_text("550")
        expect(failed.get_by_role("button", name="Retry report.pdf")).to_be_visible()
    finally:
        ftp.authorizer.user_table["alice"]["operms"].clear()
    expect(page.locator("#bg-count")).to_be_hidden()
    screenshot("files-background-transfers")
    page.set_viewport_size(PHONE)
    expect(failed.get_by_role("button", name="Retry report.pdf")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot("files-background-transfers-phone")


def test_uploads_queued_by_a_script_show_up_live_newest_first(
    page, alice, ftp, home, celery_worker
):
    site = _site(alice, ftp)

    def queue(names: list[str]) -> None:
        """As POST /api/v1/ftp/transfers/ with several files does; in a thread of its own, as
        its events are sent with async_to_sync, which Playwright's loop here would refuse."""

        def create() -> None:
            uploads = [SimpleUploadedFile(name, name.encode() * 100) for name in names]
            try:
                transfers.transfer_create_uploads(
                    owner=alice, site=site, folder="/", uploads=uploads
                )
            finally:
                connections.close_all()

        thread = threading.Thread(target=create)
        thread.start()
        thread.join(30)

    queue([f"early{n:02d}.txt" for n in range(20)])
    _log_in(page)
    _open(page, site)
    page.keyboard.press("t")  # the panel loads the list...
    panel = page.locator("#bg-transfers")
    expect(panel).to_be_visible()
    queue([f"late{n:02d}.txt" for n in range(20)])  # ...while these arrive as live events
    expect(page.locator("#bg-summary")).to_have_text("40 done", timeout=60_000)
    ids = page.eval_on_selector_all("#bg-list li", "items => items.map((li) => +li.dataset.id)")
    assert len(ids) == 40 and ids == sorted(ids, reverse=True)
    expect(panel.locator(".bg-row").first).to_contain_text("late19.txt")
    assert (home / "late19.txt").read_bytes() == b"late19.txt" * 100


@pytest.fixture(scope="module")
def slow_server(peer_cert):
    """Sends at most 2 MiB/s, so a background download can be watched, paused, resumed."""

    def customize(server: FTPServer) -> None:
        limit = {"write_limit": 2 << 20}
        server.handler.dtp_handler = type("Slow", (ThrottledDTPHandler,), limit)
        server.handler.use_sendfile = False

    yield from ftp_peer(peer_cert, customize)


def test_pause_and_resume_a_background_download_live(
    page, screenshot, alice, slow_server, celery_worker
):
    slow_server.clear_homes()
    payload = hashlib.sha256(b"slow").digest() * (10 * 1024 * 1024 // 32)  # 10 MiB
    (slow_server.homes["alice"] / "slow movie.bin").write_bytes(payload)
    site = _site(alice, slow_server, name="Slow server")
    _log_in(page)
    _open(page, site)
    _row(page, "slow movie.bin").locator(".col-size").click()
    page.get_by_role("button", name="In background").click()
    row = page.locator("#bg-list .bg-row").first
    bar = row.get_by_role("progressbar")
    page.wait_for_function(
        """() => {
          const bar = document.querySelector('#bg-list .bg-row [role=progressbar]');
          return bar && Number(bar.getAttribute('aria-valuenow')) >= 15;
        }""",
        timeout=30_000,
    )
    expect(row.locator(".state")).to_have_text("running")
    expect(row.locator(".transfer-figures")).to_contain_text(re.compile(r"MB/s · .* left"))
    screenshot("files-transfer-running")

    row.get_by_role("button", name="Pause slow movie.bin").click()
    expect(row.locator(".state")).to_have_text("paused")
    expect(row.get_by_role("button", name="Resume slow movie.bin")).to_be_focused()
    paused_at = int(bar.get_attribute("aria-valuenow"))
    assert 15 <= paused_at < 100
    row.get_by_role("button", name="Resume slow movie.bin").click()
    expect(row.locator(".state")).to_have_text("done", timeout=60_000)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    href = row.get_by_role("link", name="Save slow movie.bin").get_attribute("href")
    assert page.request.get(href).body() == payload
    expect(row.get_by_role("link", name="Save slow movie.bin")).to_be_focused()
    page.keyboard.press("Escape")  # back to the files; T hides and shows the panel
    expect(page.locator("#file-scroll")).to_be_focused()
    page.keyboard.press("t")
    expect(page.locator("#bg-transfers")).to_be_hidden()
    page.keyboard.press("t")
    expect(page.locator("#bg-transfers")).to_be_visible()
    expect(row.get_by_role("link", name="Save slow movie.bin")).to_be_focused()


def test_cancel_a_chunked_upload_that_cannot_get_through(page, alice, ftp, home):
    from ftpcore.models import UploadSession

    site = _site(alice, ftp)
    _log_in(page)
    _open(page, site)
    page.route(re.compile(r"/uploads/\d+/\?offset=\d+$"), lambda route: route.abort("failed"))
    page.locator("#upload-input").set_input_files(
        [{"name": "stuck.bin", "mimeType": "application/octet-stream", "buffer": b"s" * (17 << 20)}]
    )
    state = page.locator("#transfer-list .state")
    expect(state).to_have_text("reconnecting")
    page.get_by_role("button", name="Cancel upload of stuck.bin").click()
    expect(state).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel upload of stuck.bin")).to_be_hidden()
    upload = UploadSession.objects.get(site=site)
    for _ in range(50):  # the page's DELETE reaches the server
        upload.refresh_from_db()
        if upload.state == "cancelled":
            break
        page.wait_for_timeout(100)
    assert upload.state == "cancelled" and upload.offset == 0
    assert sorted(p.name for p in home.iterdir()) == [
        "a.txt",
        "big.bin",
        "docs",
        "music",
        "report.pdf",
    ]
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#transfers")).to_be_hidden()
