"""Writes and remote operations on FTP sites: keyword-only ``<entity>_<action>`` functions.

Remote operations use the web process's session pool (``ftpcore.pool.browse_pool``): a
user browsing a site logs in once, not on every click. Engine errors (``ftp.FtpError`` and
subclasses) and ``ValueError`` (CR/LF/NUL in a path, deleting "/") propagate unchanged: the
API maps them to 502 / 400.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ftpcore import archive
from ftpcore.models import FtpSite
from ftpcore.pool import Lease, browse_pool, settings_fingerprint, upload_slots
from ftpcore.protocols import ftp
from ftpcore.protocols.ftp import PART_SUFFIX, Entry

T = TypeVar("T")


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
    browse_pool.forget(site.owner_id, site.pk)  # other processes: the settings key differs
    return site


def site_delete(*, site: FtpSite) -> None:
    """Forget the site; the files stay on the server."""
    owner_id, site_id = site.owner_id, site.pk
    site.delete()
    browse_pool.forget(owner_id, site_id)


def site_check(*, site: FtpSite) -> dict:
    """Log in and out; raises the engine's error with the server's words."""
    welcome, features = ftp.check_login(ftp_config(site))
    return {"ok": True, "welcome": welcome, "features": sorted(features)}


def pool_key(site: FtpSite, config: ftp.FtpConfig | None = None) -> tuple[int, int, str]:
    return (site.owner_id, site.pk, settings_fingerprint(config or ftp_config(site)))


def _run(site: FtpSite, work: Callable[[ftp.FtpSession], T]) -> T:
    """``work`` on a pooled session of the site (retried once if a reused one was dead)."""
    config = ftp_config(site)
    return browse_pool.run(pool_key(site, config), config, work)


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
    return target, _visible(_run(site, lambda session: session.list(target)))


@dataclass
class Download:
    """An open download: iterate ``chunks``; close() it to stop early. A folder comes as a
    zip (``is_zip``, no size)."""

    name: str
    size: int | None
    chunks: Iterator[bytes]
    is_zip: bool = False


def file_download_open(*, site: FtpSite, path: str) -> Download:
    """Start RETR now (so a 550 is raised here, before any byte is sent) and stream the rest;
    a directory streams as a zip of everything under it."""
    target = resolve_path(site=site, path=path)
    config = ftp_config(site)
    key = pool_key(site, config)

    def start(session: ftp.FtpSession) -> ftp.DownloadStream | None:
        if target == "/":
            return None
        try:
            return session.iter_download(target)
        except ftp.FtpCommandError:
            if session.alive and _is_dir(session, target):
                return None
            raise

    stream, session = browse_pool.acquire(key, config, start)
    lease = Lease(browse_pool, key, session)
    if stream is None:
        name = posixpath.basename(target) or site.name or "files"
        return Download(
            f"{archive.zip_folder_name(name)}.zip",
            None,
            archive.zip_stream(lease, target, archive.zip_folder_name(name)),
            is_zip=True,
        )
    size = None if stream.size is None else stream.size - stream.offset
    return Download(posixpath.basename(target), size, _Closing(iter(stream), lease, stream.close))


def _is_dir(session: ftp.FtpSession, target: str) -> bool:
    try:
        session.cwd(target)
    except ftp.FtpCommandError:
        return False
    return True


class _Closing:
    """A download's chunks; finishing returns the session to the pool, closing early (or an
    error) closes it. A class, not a generator, so close() works before the first chunk."""

    def __init__(self, chunks: Iterator[bytes], lease: Lease, stop: Callable[[], None]) -> None:
        self._chunks = chunks
        self._lease = lease
        self._stop = stop

    def __iter__(self) -> _Closing:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:  # the transfer was checked (226 + size)
            self._lease.end(clean=True)
            raise
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            self._stop()
        finally:
            self._lease.end(clean=False)


def file_upload(*, site: FtpSite, directory: str | None, files: Iterable) -> list[Entry]:
    """Store each uploaded file (Django ``UploadedFile``: read in 1 MiB pieces from its
    temporary file, never whole) in ``directory`` (``FtpSession.store_all``: small files go
    straight to their names); returns their new entries."""
    target = resolve_path(site=site, path=directory)
    uploads = list(files)
    names = [file_name_check(upload.name) for upload in uploads]

    def work(session: ftp.FtpSession) -> dict[str, Entry]:
        for upload in uploads:
            upload.seek(0)  # also when retried on a new session
        sources = [(name, upload, upload.size) for upload, name in zip(uploads, names, strict=True)]
        return session.store_all(target, sources)

    with upload_slots.hold((site.owner_id, site.pk)):
        stored = _run(site, work)
    return [stored[name] for name in dict.fromkeys(names) if name in stored]


def file_name_check(name: str | None) -> str:
    """The base name of an uploaded file, or ValueError (empty, "..", a reserved name)."""
    name = posixpath.basename((name or "").replace("\\", "/"))
    if name in ("", ".", ".."):
        raise ValueError("Each uploaded file needs a name.")
    if name.endswith(PART_SUFFIX):
        raise ValueError(f"File names ending in {PART_SUFFIX} are reserved for uploads.")
    return name


def file_mkdir(*, site: FtpSite, path: str) -> str:
    target = resolve_path(site=site, path=path)
    _run(site, lambda session: session.mkdir(target))
    return target


def file_rename(*, site: FtpSite, source: str, target: str) -> tuple[str, str]:
    old, new = resolve_path(site=site, path=source), resolve_path(site=site, path=target)
    _run(site, lambda session: session.rename(old, new))
    return old, new


def file_delete(*, site: FtpSite, path: str, recursive: bool = False) -> str:
    """Delete a file, an empty directory, or (``recursive``) a directory and its contents."""
    target = resolve_path(site=site, path=path)
    if target == "/":
        raise ValueError("Refusing to delete the root directory.")

    def work(session: ftp.FtpSession) -> None:
        if recursive:
            session.delete_tree(target)
            return
        try:
            session.delete(target)
        except ftp.FtpCommandError:
            if not (session.alive and _is_dir(session, target)):
                raise
            session.rmdir(target)

    _run(site, work)
    return target


def file_chmod(*, site: FtpSite, path: str, mode: int) -> str:
    target = resolve_path(site=site, path=path)
    _run(site, lambda session: session.chmod(target, mode))
    return target
