"""A remote folder as a zip stream, built while it downloads: nothing is buffered whole.

The standard library's ``zipfile`` writes to a stream it cannot seek (it then puts each
entry's CRC and sizes in a data descriptor after the data, and everything in the central
directory at the end), so every chunk read from the FTP server goes out as soon as it was
added to the zip. Entries are stored (not deflated): most large files are already
compressed, and the web process should not spend its CPU on the rest. Zip64 is used for
entries whose size is unknown or large, names are UTF-8 (zipfile sets the flag), and
everything sits in one top-level folder named after the remote folder.

A file the server refuses to send (a clean 4xx/5xx before its data, e.g. no permission)
or a subfolder it refuses to list is left out and named in ``SATCHEL-ERRORS.txt`` at the
end of the zip; any other failure aborts the stream (the browser then shows the download
as failed rather than keeping a truncated zip that looks whole).
"""

from __future__ import annotations

import posixpath
import unicodedata
import zipfile
from collections.abc import Iterator
from datetime import datetime

from ftpcore.pool import Lease
from ftpcore.protocols import ftp
from ftpcore.protocols.ftp import PART_SUFFIX

MAX_DEPTH = 64  # servers whose MLSD follows symlinks can show loops as endless folders
ERRORS_NAME = "SATCHEL-ERRORS.txt"
ZIP64_ABOVE = 1 << 31  # entries this big (or of unknown size) get zip64 sizes


def zip_folder_name(name: str) -> str:
    """A safe top-level folder (and file) name: no separators or control characters."""
    name = display_name(name)
    name = "".join("_" if c in "/\\" else c for c in name if unicodedata.category(c)[0] != "C")
    name = name.strip().strip(".")
    return name or "files"


def display_name(name: str) -> str:
    """Names the site's encoding could not decode carry surrogate escapes: U+FFFD instead."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Pending:
    """The zip's output: what zipfile wrote since the last ``take``."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """zipfile flushes; nothing to do."""

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _date_time(modified: datetime | None) -> tuple[int, int, int, int, int, int]:
    if modified is None or modified.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return modified.timetuple()[:6]


def _info(name: str, entry: ftp.Entry | None, *, directory: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, _date_time(entry.modified if entry else None))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = ((0o40755 << 16) | 0x10) if directory else (0o100644 << 16)
    if entry is not None and entry.size is not None:
        info.file_size = entry.size
    return info


def zip_stream(lease: Lease, folder: str, top: str) -> Iterator[bytes]:
    """The zip of ``folder`` (absolute) on the leased session, under ``top/``. The lease is
    returned to the pool when the zip is complete and closed on any failure or early close."""
    session = lease.session
    pending = _Pending()
    errors: list[str] = []
    clean = False
    try:
        with zipfile.ZipFile(pending, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            archive.writestr(_info(f"{top}/", None, directory=True), b"")
            yield pending.take()
            yield from _folder(session, archive, pending, folder, top, 0, errors)
            if errors:
                report = "These could not be downloaded:\n" + "".join(f"{e}\n" for e in errors)
                archive.writestr(_info(f"{top}/{ERRORS_NAME}", None), report.encode())
        yield pending.take()
        clean = True
    finally:
        lease.end(clean=clean)


def _folder(
    session: ftp.FtpSession,
    archive: zipfile.ZipFile,
    pending: _Pending,
    path: str,
    prefix: str,
    depth: int,
    errors: list[str],
) -> Iterator[bytes]:
    try:
        entries = session.list(path)
    except ftp.FtpCommandError as exc:
        errors.append(f"{display_name(path)}/: {exc}")
        return
    entries = sorted(
        (e for e in entries if not e.name.endswith(PART_SUFFIX)),
        key=lambda e: (e.type == "dir", e.name),
    )
    for entry in entries:
        remote = posixpath.join(path, entry.name)
        name = f"{prefix}/{display_name(entry.name)}"
        if entry.type == "file":
            yield from _file(session, archive, pending, remote, name, entry, errors)
        elif entry.type == "dir":
            if depth >= MAX_DEPTH:
                errors.append(f"{display_name(remote)}/: folders nested too deep (a loop?)")
                continue
            archive.writestr(_info(f"{name}/", entry, directory=True), b"")
            yield pending.take()
            yield from _folder(session, archive, pending, remote, name, depth + 1, errors)
        else:
            errors.append(f"{display_name(remote)}: a link, not followed")


def _file(
    session: ftp.FtpSession,
    archive: zipfile.ZipFile,
    pending: _Pending,
    remote: str,
    name: str,
    entry: ftp.Entry,
    errors: list[str],
) -> Iterator[bytes]:
    try:
        stream = session.iter_download(remote)
    except ftp.FtpCommandError as exc:  # refused before any byte: leave it out
        errors.append(f"{display_name(remote)}: {exc}")
        return
    info = _info(name, entry)
    zip64 = entry.size is None or entry.size >= ZIP64_ABOVE
    try:
        with archive.open(info, "w", force_zip64=zip64) as target:
            for chunk in stream:
                target.write(chunk)
                yield pending.take()
    finally:
        stream.close()  # a no-op once the transfer completed
    yield pending.take()
