"""Chunked, resumable uploads from the browser: a large file arrives as a series of chunks
(a few MiB each), each appended to the remote temporary file (``.<name>.part-satchel``:
STOR for the first, APPE after), and the session row records how many bytes the server
confirmed. A browser whose connection dropped asks for that offset and continues from there.

- A chunk must start at the confirmed offset; otherwise ``OffsetMismatch`` says where.
- One chunk is written at a time per session: a request claims a lease with a conditional
  UPDATE (``ChunkBusy`` when another request holds it), and only the holder records the
  new offset. The lease expires, so a web process that died does not block the upload.
- The server's temporary file is the truth: when it holds other than the confirmed offset
  (an append cut half-way leaves the bytes that arrived), the offset is corrected to what
  it holds and the chunk is refused with that offset, so the browser resends from there.
- The last chunk renames the temporary file to the final name and checks its size.

Memory stays bounded: the chunk is read from the request body (spooled to disk by Django)
in the engine's 1 MiB buffer, and nothing is kept here between chunks.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable
from datetime import timedelta
from typing import BinaryIO, TypeVar

from django.db.models import F, Q
from django.utils import timezone

from ftpcore.models import FtpSite, UploadSession
from ftpcore.pool import browse_pool
from ftpcore.protocols import ftp
from ftpcore.services import file_name_check, ftp_config, pool_key, resolve_path

MAX_CHUNK = 64 * 1024 * 1024
LEASE = timedelta(minutes=10)
EXPIRE_AFTER = timedelta(days=1)

State = UploadSession.State
T = TypeVar("T")


class OffsetMismatch(Exception):
    def __init__(self, expected: int) -> None:
        super().__init__(f"The upload continues at byte {expected}.")
        self.expected = expected


class ChunkBusy(Exception):
    """Another request is writing a chunk of this upload right now."""


class UploadFinished(Exception):
    """The upload is done or cancelled: no more chunks."""


# Writes -----------------------------------------------------------------------------------


def upload_session_create(
    *, owner, site: FtpSite, directory: str | None, name: str, size: int
) -> UploadSession:
    if size < 0:
        raise ValueError("The size must not be negative.")
    name = file_name_check(name)
    path = posixpath.join(resolve_path(site=site, path=directory), name)
    # Two uploads to one file would write one temporary file: the newer one wins, the
    # older one's next chunk is refused (the newer one's first chunk truncates the file).
    UploadSession.objects.filter(site=site, path=path, state=State.OPEN).update(
        state=State.CANCELLED, lease_until=None
    )
    return UploadSession.objects.create(owner=owner, site=site, path=path, size=size)


def upload_session_cancel(*, upload: UploadSession) -> UploadSession:
    """Stop the upload and delete the server's temporary file (best effort)."""
    cancelled = UploadSession.objects.filter(pk=upload.pk, state=State.OPEN).update(
        state=State.CANCELLED, lease_until=None
    )
    if cancelled:
        part = ftp.partial_path(upload.path)
        with contextlib.suppress(ftp.FtpError):  # never started, or already gone
            _run(upload, lambda session: session.delete(part))
    upload.refresh_from_db()
    return upload


def upload_session_write(
    *, upload: UploadSession, offset: int, source: BinaryIO, length: int
) -> UploadSession:
    """Append ``length`` bytes read from ``source`` at ``offset``; the last chunk (or an
    empty one at the end, to finish again after a failed rename) completes the file."""
    if length < 0 or length > MAX_CHUNK:
        raise ValueError(f"A chunk holds between 0 and {MAX_CHUNK} bytes.")
    if offset + length > upload.size:
        raise ValueError(
            f"The chunk ends at byte {offset + length}, past the file's size {upload.size}."
        )
    lease = _claim(upload, offset)
    reader = _Reader(source)
    end = offset + length
    try:
        _run(upload, lambda session: _append(session, upload, reader, offset, length))
    except _Holds as holds:
        _record(upload, lease, holds.size)
        raise OffsetMismatch(holds.size) from None
    except BaseException:
        _record(upload, lease, _held(upload, offset))
        raise
    _record(upload, lease, end, done=end == upload.size)
    upload.refresh_from_db()
    return upload


def upload_sessions_expire(*, idle: timedelta = EXPIRE_AFTER) -> int:
    """Uploads nobody wrote to for ``idle`` (the browser tab was closed for good): cancelled,
    and their temporary files deleted from the servers (best effort; beat, hourly)."""
    cutoff = timezone.now() - idle
    stale = UploadSession.objects.filter(state=State.OPEN, updated_at__lt=cutoff).filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now())
    )
    expired = 0
    for upload in stale.select_related("site"):
        taken = UploadSession.objects.filter(
            pk=upload.pk, state=State.OPEN, updated_at__lt=cutoff
        ).update(state=State.CANCELLED, lease_until=None)
        if not taken:
            continue  # written to meanwhile
        expired += 1
        # Best effort: the file may be gone already, or the server away for now.
        with (
            contextlib.suppress(ftp.FtpError, OSError),
            ftp.FtpSession(ftp_config(upload.site)) as session,
        ):
            session.delete(ftp.partial_path(upload.path))
    return expired


# Internals --------------------------------------------------------------------------------


class _Holds(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


class _Reader:
    """The chunk's bytes, read once: a retry on a new session must not reread a stream
    that was already (partly) sent."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.started = False

    def readinto(self, buffer: memoryview) -> int:
        self.started = True
        data = self.source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _run(upload: UploadSession, work: Callable[[ftp.FtpSession], T]) -> T:
    site = upload.site
    config = ftp_config(site)
    return browse_pool.run(pool_key(site, config), config, work)


def _claim(upload: UploadSession, offset: int) -> int:
    now = timezone.now()
    claimed = (
        UploadSession.objects.filter(pk=upload.pk, state=State.OPEN, offset=offset)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease=F("lease") + 1, lease_until=now + LEASE)
    )
    upload.refresh_from_db()
    if not claimed:
        if upload.state != State.OPEN:
            raise UploadFinished(f"This upload is {upload.state}.")
        if upload.offset != offset:
            raise OffsetMismatch(upload.offset)
        raise ChunkBusy("A chunk of this upload is being written; ask for the offset again.")
    return upload.lease


def _record(upload: UploadSession, lease: int, offset: int, *, done: bool = False) -> None:
    """Only the lease holder writes; a later holder (the lease expired) wins."""
    fields = {"offset": offset, "lease_until": None}
    if done:
        fields["state"] = State.DONE
    UploadSession.objects.filter(pk=upload.pk, lease=lease, state=State.OPEN).update(**fields)


def _append(
    session: ftp.FtpSession, upload: UploadSession, reader: _Reader, offset: int, length: int
) -> None:
    if reader.started:
        raise ftp.FtpTransferError(
            "The connection to the server was lost while the chunk was being sent.",
            explanation="Send the chunk again from the offset the server holds.",
        )
    part = ftp.partial_path(upload.path)
    end = offset + length
    if offset:
        try:
            held = session.size(part)
        except ftp.FtpCommandError:
            held = 0  # the temporary file is gone: start again
        if held is None:
            held = offset  # no SIZE: trust the confirmed offset (APPE appends anyway)
        if held != offset:
            raise _Holds(held if 0 <= held <= upload.size else 0)
    if length or not offset:  # offset 0: STOR creates (or truncates) the file
        session.upload(part, reader, offset=offset, size=end, temporary=False)
    if end == upload.size:
        _finish(session, part, upload.path, upload.size)


def _finish(session: ftp.FtpSession, part: str, target: str, size: int) -> None:
    """Rename the temporary file over the final name and check the size it ended with."""
    try:
        session.rename(part, target)
    except ftp.FtpCommandError as exc:
        # Windows servers refuse to rename over an existing file.
        if exc.code is None or exc.code < 500 or session.size(target) is None:
            raise
        session.delete(target)
        session.rename(part, target)
    stored = session.size(target)
    if stored is not None and stored != size:
        raise ftp.FtpTransferError(
            f"The server stored {stored} bytes, not {size}.",
            explanation="The uploaded file does not have the expected size; upload it again.",
        )


def _held(upload: UploadSession, fallback: int) -> int:
    """After a failed chunk: how much the server's temporary file holds (what arrived of the
    chunk counts), or ``fallback`` when it cannot tell."""
    try:
        held = _run(upload, lambda session: session.size(ftp.partial_path(upload.path)))
    except (ftp.FtpError, ValueError):
        return fallback
    if held is None or not 0 <= held <= upload.size:
        return fallback
    return held
