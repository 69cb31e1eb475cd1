"""Mail and FTP together: attach a file from an FTP site, save an attachment to an FTP site.

- ``upload_create_from_ftp`` streams RETR into an ``Upload`` (the same row and file a browser
  upload makes), refusing files over ``UPLOAD_MAX_BYTES``: at once when the server tells the
  size, else as soon as the stream passes it. Nothing half-written is left behind: a refused
  or broken download removes what was stored.
- ``attachment_save_to_ftp_start`` queues a job; ``attachment_save_to_ftp`` (the worker)
  fetches the attachment's decoded bytes from IMAP and stores them under a hidden temporary
  name (``.satchel-job-<id>.part-satchel``, resumed after a cut), then renames it into place.

Name clashes never overwrite. Like a browser's downloads folder (and FileZilla's "rename"
answer, given without asking), the file becomes "name (1).ext", "name (2).ext", … and the
job's result names the file written. Not a 409: the name is checked by the worker, when
nobody is there to answer, and checking it in the request would still race the upload.
Case is ignored when comparing names, for servers on case-insensitive disks. FTP has no
"rename unless the target exists", so a file another client creates with the same name in
the instant between our listing and our RNTO could still be replaced.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import posixpath
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import transaction

from ftpcore.models import FtpSite
from ftpcore.protocols import ftp
from ftpcore.services import file_download_open, ftp_config, resolve_path
from mailcore import services
from mailcore.models import Attachment, Upload
from mailcore.outbox import upload_create
from mailcore.protocols import imap
from mailcore.protocols.mime import safe_filename
from webapp.jobs.models import Job
from webapp.jobs.services import (
    JobCancelled,
    job_claim,
    job_create,
    job_fail,
    job_finish,
    job_report_progress,
)

_PROGRESS_EVERY = 0.5  # seconds between a save's progress reports


class FileTooLarge(ValueError):
    """The FTP file is bigger than UPLOAD_MAX_BYTES (the API answers 400)."""


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _too_large(name: str, size: int | None) -> FileTooLarge:
    limit = settings.UPLOAD_MAX_BYTES
    what = f"{name} is {_mib(size)}" if size is not None else f"{name} is over the limit"
    return FileTooLarge(
        f"{what}; files attached from FTP can be at most {_mib(limit)} (UPLOAD_MAX_BYTES)."
    )


def check_path(path: str) -> str:
    """A path as typed: not empty, no CR/LF/NUL (the engine refuses those too, but later)."""
    if not path or not path.strip():
        raise ValueError("path: give the path of a file.")
    if any(ch in path for ch in "\r\n\0"):
        raise ValueError("path: line breaks and NUL are not allowed in a path.")
    return path


# --------------------------------------------------------------------------- attach from FTP


class _Capped:
    """The download's chunks, stopping (not raising) past ``limit`` bytes or on a transfer
    error, so ``upload_create`` always finishes its row and we can remove it afterwards."""

    def __init__(self, chunks: Iterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit
        self.size = 0
        self.error: ftp.FtpError | None = None

    @property
    def over(self) -> bool:
        return self.size > self._limit

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                self.size += len(chunk)
                yield chunk
                if self.over:
                    return
        except ftp.FtpError as exc:
            self.error = exc
        finally:
            self._chunks.close()


def upload_create_from_ftp(*, owner, site: FtpSite, path: str) -> Upload:
    """Copy one file of the user's FTP site into a new Upload, streamed, size-capped.

    Raises the engine's FtpError (a 550 with the server's words), ValueError (a folder, a
    bad path, someone else's site) and FileTooLarge."""
    if site.owner_id != owner.pk:
        raise ValueError("site: no such site.")
    download = file_download_open(site=site, path=check_path(path))
    if download.is_zip:
        download.chunks.close()
        raise ValueError(f"{path} is a folder: pick a file to attach.")
    if download.size is not None and download.size > settings.UPLOAD_MAX_BYTES:
        download.chunks.close()
        raise _too_large(download.name, download.size)
    content_type = mimetypes.guess_type(download.name)[0] or "application/octet-stream"
    capped = _Capped(download.chunks, settings.UPLOAD_MAX_BYTES)
    upload = upload_create(
        owner=owner, filename=download.name, chunks=iter(capped), content_type=content_type
    )
    if capped.error is not None or capped.over:
        upload_discard(upload=upload)
        if capped.error is not None:
            raise capped.error
        raise _too_large(download.name, None)
    return upload


def uploads_create_from_ftp(*, owner, files: list[tuple[FtpSite, str]]) -> list[Upload]:
    """Several files (an outgoing message's ``ftp_attachments``): all of them, or none."""
    created: list[Upload] = []
    try:
        for site, path in files:
            created.append(upload_create_from_ftp(owner=owner, site=site, path=path))
    except BaseException:
        for upload in created:
            upload_discard(upload=upload)
        raise
    return created


def upload_discard(*, upload: Upload) -> None:
    Path(upload.path).unlink(missing_ok=True)
    upload.delete()


# --------------------------------------------------------------------------- save to FTP


def attachment_save_to_ftp_start(*, owner, attachment: Attachment, site: FtpSite, path: str) -> Job:
    """Queue the copy. ``path`` is the file to write; a path ending in "/" (or naming an
    existing folder) gets the attachment's own name inside that folder."""
    if site.owner_id != owner.pk or attachment.message.account.owner_id != owner.pk:
        raise ValueError("No such site or attachment.")
    check_path(path)
    name = safe_filename(attachment.filename, attachment.content_type)
    target = resolve_path(site=site, path=path + name if path.endswith("/") else path)
    if target == "/":
        raise ValueError("path: give a file name, not the root folder.")
    from mailcore.tasks import mail_attachment_save_to_ftp

    with transaction.atomic():
        job = job_create(owner=owner, kind=Job.Kind.ATTACHMENT_SAVE_TO_FTP, unit="bytes")
        job.result = {"attachment": attachment.pk, "site": site.pk, "path": target}
        job.save(update_fields=["result"])
        transaction.on_commit(lambda: mail_attachment_save_to_ftp.delay(job.pk))
    return job


def free_name(name: str, taken: set[str]) -> str:
    """``name``, or "stem (n).ext" with the smallest n not in ``taken`` (casefolded names).
    Like Chrome, ".tar.gz" & co. stay whole: "backup (1).tar.gz"."""
    if name.casefold() not in taken:
        return name
    stem, ext = posixpath.splitext(name)
    if stem.lower().endswith(".tar"):
        stem, ext = stem[:-4], stem[-4:] + ext
    number = 1
    while f"{stem} ({number}){ext}".casefold() in taken:
        number += 1
    return f"{stem} ({number}){ext}"


def _final_path(session: ftp.FtpSession, target: str, name: str) -> str:
    """Where the file goes: ``target``, inside it when it is a folder, renamed on a clash."""
    directory, wanted = posixpath.split(target)
    entries = {entry.name.casefold(): entry for entry in session.list(directory)}
    existing = entries.get(wanted.casefold())
    if existing is not None and existing.type == "dir":
        directory, wanted = posixpath.join(directory, existing.name), name
        entries = {entry.name.casefold(): entry for entry in session.list(directory)}
    return posixpath.join(directory, free_name(wanted, set(entries)))


def _temporary(target: str, job_id: int) -> str:
    return posixpath.join(posixpath.dirname(target), f".satchel-job-{job_id}{ftp.PART_SUFFIX}")


def _remove_quietly(site: FtpSite, path: str) -> None:
    try:
        with ftp.FtpSession(ftp_config(site)) as session:
            session.delete(path)
    except ftp.FtpError:
        pass  # nothing was stored, or the server is gone: the hidden name stays hidden


def _store(job: Job, site: FtpSite, target: str, name: str, data: bytes) -> str:
    temporary = _temporary(target, job.pk)
    reported = [0.0]

    def progress(done: int) -> None:
        # A report is a row update plus a live event (~15 ms): twice a second is plenty.
        now = time.monotonic()
        if now - reported[0] >= _PROGRESS_EVERY or done == len(data):
            reported[0] = now
            job_report_progress(job=job, done=done)

    try:
        ftp.transfer_with_resume(
            lambda: ftp.FtpSession(ftp_config(site)),
            temporary,
            io.BytesIO(data),
            direction="upload",
            size=len(data),
            progress=progress,
            temporary=False,
        )
        with ftp.FtpSession(ftp_config(site)) as session:
            final = _final_path(session, target, name)
            session.rename(temporary, final)
    except BaseException:
        _remove_quietly(site, temporary)
        raise
    return final


def attachment_save_to_ftp(*, job_id: int) -> None:
    """The worker: claim the job, fetch the attachment, store it, record the outcome. The
    mail or FTP server's refusal fails the job with its words."""
    job = job_claim(job_id=job_id)
    if job is None:
        return
    spec = job.result
    attachment = (
        Attachment.objects.filter(pk=spec.get("attachment"), message__account__owner=job.owner_id)
        .select_related("message__mailbox", "message__account")
        .first()
    )
    site = FtpSite.objects.filter(pk=spec.get("site"), owner=job.owner_id).first()
    if attachment is None or site is None:
        job_fail(job=job, error="The attachment or the FTP site no longer exists.")
        return
    name = safe_filename(attachment.filename, attachment.content_type)
    try:
        data = services.attachment_bytes(attachment=attachment)
        job_report_progress(job=job, done=0, total=len(data))
        final = _store(job, site, spec["path"], name, data)
    except JobCancelled:
        return
    except imap.ImapError as exc:
        job_fail(job=job, error=f"Mail server: {exc.reply}")
    except ftp.FtpError as exc:
        job_fail(job=job, error=f"FTP server: {exc}")
    except ValueError as exc:
        job_fail(job=job, error=str(exc))
    else:
        job_finish(
            job=job,
            result={
                **spec,
                "requested": spec["path"],
                "path": final,
                "name": posixpath.basename(final),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
        )
