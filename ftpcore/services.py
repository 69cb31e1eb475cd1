"""Writes and remote operations on FTP sites: keyword-only ``<entity>_<action>`` functions.

Each call opens a short-lived session (connect, log in, act, QUIT). A per-user connection
pool comes later; the engine's ``last_used`` / ``alive`` are there for it. Engine errors
(``ftp.FtpError`` and subclasses) and ``ValueError`` (CR/LF/NUL in a path, deleting "/")
propagate unchanged: the API maps them to 502 / 400.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from ftpcore.models import FtpSite
from ftpcore.protocols import ftp
from ftpcore.protocols.ftp import PART_SUFFIX, Entry


class IsADirectory(ValueError):
    """A download asked for a directory (zip streams come later)."""


# Sites ------------------------------------------------------------------------------------


def ftp_config(site: FtpSite) -> ftp.FtpConfig:
    return ftp.FtpConfig(
        host=site.host,
        port=site.port,
        security=site.security,
        username=site.username,
        password=site.password,
        passive=site.passive,
        encoding=site.encoding,
        tls_fingerprint=site.tls_fingerprint,
    )


def site_create(*, owner, **fields) -> FtpSite:
    return FtpSite.objects.create(owner=owner, **fields)


def site_update(*, site: FtpSite, **fields) -> FtpSite:
    for name, value in fields.items():
        setattr(site, name, value)
    site.save()
    return site


def site_delete(*, site: FtpSite) -> None:
    """Forget the site; the files stay on the server."""
    site.delete()


def site_check(*, site: FtpSite) -> dict:
    """Log in and out; raises the engine's error with the server's words."""
    welcome, features = ftp.check_login(ftp_config(site))
    return {"ok": True, "welcome": welcome, "features": sorted(features)}


@contextmanager
def _session(site: FtpSite) -> Iterator[ftp.FtpSession]:
    with ftp.FtpSession(ftp_config(site)) as session:
        yield session


def resolve_path(*, site: FtpSite, path: str | None) -> str:
    """An absolute, normalised path; relative ones start at the site's initial path."""
    base = site.initial_path or "/"
    joined = posixpath.join(base if base.startswith("/") else "/" + base, path or "")
    normal = posixpath.normpath(joined)
    return "/" if normal.startswith("//") else normal  # normpath keeps a leading "//"


# Files ------------------------------------------------------------------------------------


def _visible(entries: Iterable[Entry]) -> list[Entry]:
    """Without the engine's temporary uploads; directories first, then by name."""
    shown = [e for e in entries if not e.name.endswith(PART_SUFFIX)]
    return sorted(shown, key=lambda e: (e.type != "dir", e.name.casefold(), e.name))


def file_list(*, site: FtpSite, path: str | None = None) -> tuple[str, list[Entry]]:
    target = resolve_path(site=site, path=path)
    with _session(site) as session:
        return target, _visible(session.list(target))


@dataclass
class Download:
    """An open download: iterate ``chunks`` (the session closes at the end or on close())."""

    name: str
    size: int | None
    chunks: Iterator[bytes]


def file_download_open(*, site: FtpSite, path: str) -> Download:
    """Start RETR now (so a 550 is raised here, before any byte is sent) and stream the rest."""
    target = resolve_path(site=site, path=path)
    if target == "/":
        raise IsADirectory("/ is a directory; downloading folders as zip is not available yet.")
    session = ftp.FtpSession(ftp_config(site))
    try:
        try:
            stream = session.iter_download(target)
        except ftp.FtpCommandError:
            if session.alive and _is_dir(session, target):
                raise IsADirectory(
                    f"{target} is a directory; downloading folders as zip is not available yet."
                ) from None
            raise
    except BaseException:
        session.close()
        raise
    size = None if stream.size is None else stream.size - stream.offset
    return Download(posixpath.basename(target), size, _Closing(stream, session))


def _is_dir(session: ftp.FtpSession, target: str) -> bool:
    try:
        session.cwd(target)
    except ftp.FtpCommandError:
        return False
    return True


class _Closing:
    """The download's chunks; closing (or finishing) also ends the session. A class, not a
    generator, so close() works even before the first chunk was asked for."""

    def __init__(self, stream: ftp.DownloadStream, session: ftp.FtpSession) -> None:
        self._stream = stream
        self._chunks = iter(stream)
        self._session = session

    def __iter__(self) -> _Closing:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:  # StopIteration included: the transfer was checked
            self.close()
            raise

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._session.close()


def file_upload(*, site: FtpSite, directory: str | None, files: Iterable) -> list[Entry]:
    """Store each uploaded file (Django ``UploadedFile``: read in 1 MiB pieces from its
    temporary file, never whole) in ``directory``; returns their new entries."""
    target = resolve_path(site=site, path=directory)
    uploads = list(files)
    names = [_file_name(upload.name) for upload in uploads]
    with _session(site) as session:
        for upload, name in zip(uploads, names, strict=True):
            source: BinaryIO = upload
            upload.seek(0)
            session.upload(posixpath.join(target, name), source, size=upload.size)
        stored = {entry.name: entry for entry in session.list(target)}
    return [stored[name] for name in dict.fromkeys(names) if name in stored]


def _file_name(name: str | None) -> str:
    name = posixpath.basename((name or "").replace("\\", "/"))
    if name in ("", ".", ".."):
        raise ValueError("Each uploaded file needs a name.")
    if name.endswith(PART_SUFFIX):
        raise ValueError(f"File names ending in {PART_SUFFIX} are reserved for uploads.")
    return name


def file_mkdir(*, site: FtpSite, path: str) -> str:
    target = resolve_path(site=site, path=path)
    with _session(site) as session:
        session.mkdir(target)
    return target


def file_rename(*, site: FtpSite, source: str, target: str) -> tuple[str, str]:
    old, new = resolve_path(site=site, path=source), resolve_path(site=site, path=target)
    with _session(site) as session:
        session.rename(old, new)
    return old, new


def file_delete(*, site: FtpSite, path: str, recursive: bool = False) -> str:
    """Delete a file, an empty directory, or (``recursive``) a directory and its contents."""
    target = resolve_path(site=site, path=path)
    if target == "/":
        raise ValueError("Refusing to delete the root directory.")
    with _session(site) as session:
        if recursive:
            session.delete_tree(target)
            return target
        try:
            session.delete(target)
        except ftp.FtpCommandError:
            if not (session.alive and _is_dir(session, target)):
                raise
            session.rmdir(target)
    return target


def file_chmod(*, site: FtpSite, path: str, mode: int) -> str:
    target = resolve_path(site=site, path=path)
    with _session(site) as session:
        session.chmod(target, mode)
    return target
