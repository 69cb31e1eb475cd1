"""Background transfers: the state machine of ``Transfer`` rows and the work a worker does.

States: queued -> running -> done | failed | cancelled; running <-> paused (via queued);
failed / cancelled -> queued (retry). Every move is a conditional UPDATE, so a task that
runs twice, or a worker killed at any line, never loses or duplicates a transfer:

- ``transfer_claim`` moves queued -> running under a per-site limit (the site rows are
  locked while running transfers are counted, so two workers cannot both take the last
  slot) and bumps ``claim``, a fencing token.
- A download or upload claimed by a task makes that worker the site's *runner*: it keeps
  its logged-in session and, in the statement that finishes one transfer, claims the site's
  next queued download/upload (oldest first), so the slot passes straight on: 1,000 queued
  uploads cost ``FTP_TRANSFERS_PER_SITE`` logins and no task each. Small uploads never tried
  before are claimed in runs of up to ``BATCH_MAX`` and stored together (one listing checks
  their sizes; a failed run is retried file by file), finished in one statement with the
  next claim; a batch counts as that many running rows toward the site's limit, so it can
  keep a further runner from starting but never lets one too many connect. A runner hands
  its slot back when the queue is empty or after ``RUNNER_SECONDS`` (other sites' work,
  and queued copies, then get their turn); it then enqueues the site's queued transfers.
- While running, each progress tick (at most every ~0.5 s) writes bytes_done + heartbeat
  *only where state is running and claim is ours*. No row updated means the owner paused or
  cancelled it (or the sweeper gave it to another worker): the work on it stops there, and a
  runner goes on with the next one.
- A dropped connection resumes from the bytes already transferred (download: REST at the
  local file's size; upload and copy: the size of the server's ``.part`` file), a bounded
  number of attempts with backoff; then the row fails with the server's words.
- A download is hashed (SHA-256) from the local file once its data is checked; a big one
  is marked done (and announced) first, and its sha256 is written before the runner goes
  on. An upload's file is hashed as it arrives from the browser (``transfer_create``), so
  the worker only sends.
- A worker that dies leaves a running row with an old heartbeat; ``transfers_sweep_stale``
  queues it again and the next worker resumes it. A per-transfer file lock keeps an old
  worker that has not noticed yet from writing alongside the new one.

A transfer that finds its site(s) at the limit stays queued and its task ends: a runner of
that site takes it next, and a runner or copy that gives its slot back enqueues the queued
ones of its sites again (the sweeper does so too, should that kick be lost).

Events: ``transfer.progress`` on each state change and progress tick. A worker sends them
from one thread with a lasting connection (``webapp.events.sender``); a transfer claimed by a runner
is announced as running only at its first tick, so a batch of tiny files sends one event
per file (done), and events of one transfer still pending collapse into the latest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import posixpath
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from ftpcore.models import FtpSite, Transfer
from ftpcore.protocols import ftp
from ftpcore.services import ftp_config, resolve_path
from webapp.events.publish import event_publish, event_publish_many
from webapp.events.sender import event_enqueue, event_sender

State = Transfer.State
Kind = Transfer.Kind

TICK_SECONDS = 0.5  # progress is written and published at most this often
RUNNER_SECONDS = 60.0  # a runner gives its slot back after this long (fairness to others)
PIPE_CHUNKS = 8  # copy: at most this many chunks (of <= 1 MiB) between download and upload
HASH_CHECKPOINT = 4 * 1024 * 1024  # copy: hash snapshots so a resume re-reads <= 4 MiB
HASH_INLINE_MAX = 4 * 1024 * 1024  # a bigger download is marked done before it is hashed
BATCH_MAX = 50  # small new uploads a runner claims and stores together (_store_batch)
STALE_ERROR = "The worker running this transfer stopped responding; it was queued again."


def per_site_limit() -> int:
    return max(1, int(getattr(settings, "FTP_TRANSFERS_PER_SITE", 2)))


def max_attempts() -> int:
    return max(1, int(getattr(settings, "FTP_TRANSFER_ATTEMPTS", 5)))


def backoff_base() -> float:
    return float(getattr(settings, "FTP_TRANSFER_BACKOFF", 1.0))


def lease_seconds() -> int:
    return int(getattr(settings, "FTP_TRANSFER_LEASE_SECONDS", 120))


# What a runner reports of a transfer it ran: (row, state, fields to write).
Finish = tuple[Transfer, str, dict[str, Any]]


class TransferStopped(Exception):
    """Raised inside a running transfer when its row is no longer ours to run."""


# Events -----------------------------------------------------------------------------------


def transfer_event(
    transfer: Transfer, *, speed: float | None = None, eta: float | None = None
) -> dict[str, Any]:
    return {
        "id": transfer.pk,
        "kind": transfer.kind,
        "state": transfer.state,
        "bytes_done": transfer.bytes_done,
        "bytes_total": transfer.bytes_total,
        "attempts": transfer.attempts,
        "speed": speed,
        "eta": eta,
        "last_error": transfer.last_error,
        "sha256": transfer.sha256,
    }


def _progress_event(transfer: Transfer, **figures: float | None) -> dict[str, Any]:
    return {"type": "transfer.progress", "transfer": transfer_event(transfer, **figures)}


def _publish(transfer: Transfer, **figures: float | None) -> None:
    """From the web side (create, cancel, pause...): one event, after commit."""
    event_publish(user_id=transfer.owner_id, event=_progress_event(transfer, **figures))


def _publish_many(user_id: int, transfers: list[Transfer]) -> None:
    """``_publish`` for several of one user's transfers, in one message."""
    event_publish_many(user_id=user_id, events=[_progress_event(t) for t in transfers])


def _announce(transfer: Transfer, **figures: float | None) -> None:
    """From a worker: the row as it is now, sent once the current transaction commits."""
    event = _progress_event(transfer, **figures)
    event_enqueue(user_id=transfer.owner_id, event=event, key=("transfer", transfer.pk))


# Local files ------------------------------------------------------------------------------


def transfer_dir(*, owner_id: int, transfer_id: int) -> Path:
    return Path(settings.DATA_DIR) / "transfers" / str(owner_id) / str(transfer_id)


def _safe_name(name: str | None, fallback: str) -> str:
    name = posixpath.basename((name or "").replace("\\", "/"))
    name = "".join(c for c in name if c.isprintable() and c not in "\0")
    return name if name not in ("", ".", "..") else fallback


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


class _LocalSink:
    """Where a download lands: ``os.write`` straight to the file (no second userspace copy)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, data: bytes | memoryview) -> int:
        written = os.write(self.fd, data)
        self.size += written
        return written

    def truncate(self, size: int) -> None:
        """Cut the file back (the remote file changed)."""
        os.ftruncate(self.fd, size)
        self.size = size

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def _run_lock(transfer: Transfer, timeout: float = 60.0) -> Iterator[None]:
    """One worker at a time per transfer, even across a re-claim (pause/resume, sweeper)."""
    directory = transfer_dir(owner_id=transfer.owner_id, transfer_id=transfer.pk)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TransferStopped from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# Reads ------------------------------------------------------------------------------------


def transfer_list(*, user):
    """The user's transfers only: another user's simply do not exist (404)."""
    return Transfer.objects.filter(owner=user)


# Creating and controlling -----------------------------------------------------------------


def _enqueue(transfer_id: int, countdown: float | None = None) -> None:
    from ftpcore.tasks import transfer_run

    if countdown:
        transfer_run.apply_async((transfer_id,), countdown=countdown)
    else:
        transfer_run.delay(transfer_id)


def _enqueue_after_commit(transfer_id: int) -> None:
    transaction.on_commit(lambda: _enqueue(transfer_id))


def _target(path: str, name: str) -> str:
    """A path ending in "/" names a directory: the file keeps its name there."""
    return posixpath.join(path, name) if path.endswith("/") else path


def _check_line(*values: str) -> None:
    for value in values:
        if any(c in value for c in "\r\n\0"):
            raise ValueError("Paths must not contain CR, LF or NUL characters.")


def _check_not_reserved(*paths: str) -> None:
    for value in paths:
        if value and posixpath.basename(value).endswith(ftp.PART_SUFFIX):
            raise ValueError(f"File names ending in {ftp.PART_SUFFIX} are reserved.")


def _upload_fields(*, owner, site: FtpSite, path: str, upload) -> dict[str, Any]:
    """An upload row's fields: the file keeps its (cleaned) name when ``path`` is a folder."""
    name = _safe_name(upload.name, "upload")
    target = resolve_path(site=site, path=_target(path or "/", name))
    _check_not_reserved(name, target)
    fields = {"owner": owner, "kind": Kind.UPLOAD, "site": site, "name": name, "path": target}
    return fields | {"bytes_total": upload.size}


def _keep_upload(row: Transfer, upload) -> None:
    """The uploaded file, kept under DATA_DIR and hashed (so the worker only sends it); sets
    ``local_path`` and ``sha256`` on ``row`` (not saved). A big upload Django spooled to a
    temporary file is linked into place when on the same file system (the temporary name
    goes when Django closes it), so its bytes are not written twice; otherwise it is
    copied in 1 MiB pieces, hashed on the way."""
    directory = transfer_dir(owner_id=row.owner_id, transfer_id=row.pk)
    directory.mkdir(parents=True, exist_ok=True)
    local = directory / "upload"
    try:
        os.link(upload.temporary_file_path(), local)
    except (AttributeError, OSError):  # in memory, or another file system
        upload.seek(0)
        digest = hashlib.sha256()
        with open(local, "wb") as file:
            for chunk in upload.chunks(1024 * 1024):
                file.write(chunk)
                digest.update(chunk)
        row.sha256 = digest.hexdigest()
    else:
        row.sha256 = _file_sha256(local)
    row.local_path = str(local)


def transfer_create(
    *,
    owner,
    kind: str,
    site: FtpSite,
    path: str,
    target_site: FtpSite | None = None,
    target_path: str = "",
    upload=None,
) -> Transfer:
    """Create a queued transfer and enqueue it once committed. ``upload`` (a Django
    ``UploadedFile``) is required for uploads: it is kept under DATA_DIR first (``_keep_upload``).
    Paths are checked (CR/LF/NUL -> ValueError) and normalised here."""
    _check_line(path, target_path)
    fields: dict[str, Any] = {"owner": owner, "kind": kind, "site": site}
    if kind == Kind.DOWNLOAD:
        fields["path"] = resolve_path(site=site, path=path)
        if fields["path"] == "/":
            raise ValueError("/ is a directory; give the path of a file.")
        fields["name"] = _safe_name(posixpath.basename(fields["path"]), "download")
    elif kind == Kind.UPLOAD:
        if upload is None:
            raise ValueError("An upload needs a file (multipart field 'file').")
        fields = _upload_fields(owner=owner, site=site, path=path, upload=upload)
    elif kind == Kind.COPY:
        fields["path"] = resolve_path(site=site, path=path)
        target_site = target_site or site
        name = posixpath.basename(fields["path"])
        fields["name"] = _safe_name(name, "copy")
        fields["target_site"] = target_site
        fields["target_path"] = resolve_path(
            site=target_site, path=_target(target_path or "/", name)
        )
        if target_site.pk == site.pk and fields["target_path"] == fields["path"]:
            raise ValueError("A copy needs a target other than its source.")
    else:
        raise ValueError(f"Unknown kind {kind!r}.")
    _check_not_reserved(fields["path"], fields.get("target_path", ""))

    with transaction.atomic():
        row = Transfer.objects.create(**fields)
        if kind == Kind.UPLOAD:
            _keep_upload(row, upload)
            row.save(update_fields=["local_path", "sha256"])
        _publish(row)
        _enqueue_after_commit(row.pk)
    return row


_KEPT = f"""
UPDATE {Transfer._meta.db_table} AS t SET local_path = k.local_path, sha256 = k.sha256
  FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS k(id, local_path, sha256)
 WHERE t.id = k.id
"""  # noqa: S608 — only the model's own table name is interpolated


def transfer_create_uploads(*, owner, site: FtpSite, folder: str, uploads: list) -> list[Transfer]:
    """Queue an upload of each file into ``folder``, in one transaction: rows inserted and
    updated in one statement each, their events in one message, and tasks enqueued for the
    first few only — those claim the site's slots, and the runners they become take the
    rest from the queue (``_HAND_OVER``), where a task each would only find its row taken.
    ``folder`` is a directory: a path that does not end in "/" gets one."""
    _check_line(folder)
    folder = folder if folder.endswith("/") else f"{folder}/"
    rows = [Transfer(**_upload_fields(owner=owner, site=site, path=folder, upload=upload))
            for upload in uploads]  # fmt: skip
    with transaction.atomic():
        rows = Transfer.objects.bulk_create(rows)
        for row, upload in zip(rows, uploads, strict=True):
            _keep_upload(row, upload)
        with connection.cursor() as cursor:  # bulk_update's CASE per row costs ~4 ms a row
            cursor.execute(_KEPT, [[r.pk for r in rows], [r.local_path for r in rows],
                                   [r.sha256 for r in rows]])  # fmt: skip
        _publish_many(owner.pk, rows)
        for row in rows[: 2 * per_site_limit()]:
            _enqueue_after_commit(row.pk)
    return rows


def _move(
    transfer: Transfer, from_states: tuple[str, ...], to_state: str, **fields: Any
) -> Transfer | None:
    """Conditional state change; the reloaded row (published) or None if it was elsewhere."""
    moved = Transfer.objects.filter(pk=transfer.pk, state__in=from_states).update(
        state=to_state, **fields
    )
    if not moved:
        return None
    row = Transfer.objects.get(pk=transfer.pk)
    _publish(row)
    return row


def transfer_cancel(*, transfer: Transfer) -> Transfer:
    """Queued/paused: cancelled at once; running: the worker stops at its next tick (and goes
    on with its site's next transfer, so no slot needs handing back here)."""
    now = timezone.now()
    row = _move(
        transfer,
        (State.QUEUED, State.RUNNING, State.PAUSED),
        State.CANCELLED,
        finished_at=now,
        last_error="Cancelled by you.",
    )
    return row or Transfer.objects.get(pk=transfer.pk)


def transfer_pause(*, transfer: Transfer) -> Transfer:
    row = _move(transfer, (State.QUEUED, State.RUNNING), State.PAUSED)
    return row or Transfer.objects.get(pk=transfer.pk)


def transfer_resume(*, transfer: Transfer) -> Transfer:
    with transaction.atomic():
        row = _move(transfer, (State.PAUSED,), State.QUEUED)
        if row is not None:
            _enqueue_after_commit(row.pk)
    return row or Transfer.objects.get(pk=transfer.pk)


def transfer_retry(*, transfer: Transfer) -> Transfer:
    """failed/cancelled -> queued with fresh attempts; the work resumes where it stopped."""
    with transaction.atomic():
        row = _move(
            transfer,
            (State.FAILED, State.CANCELLED),
            State.QUEUED,
            attempts=0,
            last_error="",
            finished_at=None,
        )
        if row is not None:
            _enqueue_after_commit(row.pk)
    return row or Transfer.objects.get(pk=transfer.pk)


# Claiming ---------------------------------------------------------------------------------


def _site_ids(transfer: Transfer) -> list[int]:
    return sorted({transfer.site_id, transfer.target_site_id} - {None})


def _running_on(site_id: int) -> int:
    return Transfer.objects.filter(
        Q(site_id=site_id) | Q(target_site_id=site_id), state=State.RUNNING
    ).count()


def _take(transfer_id: int) -> Transfer | None:
    """queued -> running with a new fencing token; the first attempt is counted here."""
    now = timezone.now()
    claimed = Transfer.objects.filter(pk=transfer_id, state=State.QUEUED).update(
        state=State.RUNNING,
        claim=F("claim") + 1,
        attempts=F("attempts") + 1,
        heartbeat_at=now,
        started_at=now,
        last_error="",
    )
    return Transfer.objects.get(pk=transfer_id) if claimed else None


def transfer_claim(*, transfer_id: int) -> tuple[Transfer | None, bool]:
    """queued -> running: (the row, False), or (None, busy) where busy means one of its
    sites already runs ``FTP_TRANSFERS_PER_SITE`` transfers (it stays queued)."""
    limit = per_site_limit()
    with transaction.atomic():
        row = Transfer.objects.filter(pk=transfer_id, state=State.QUEUED).first()
        if row is None:
            return None, False
        site_ids = _site_ids(row)
        # Lock the sites (in id order, so claims never deadlock): claims on one site are
        # serialised, so the count below cannot be stale when we take the slot.
        list(FtpSite.objects.select_for_update().filter(pk__in=site_ids).order_by("pk"))
        if any(_running_on(site_id) >= limit for site_id in site_ids):
            return None, True
        row = _take(transfer_id)
        if row is not None:
            _announce(row)
    return row, False


def _claim_next(*, site_id: int, finished: list[Finish]) -> list[Transfer]:
    """A runner's step: finish its transfers (``finished``: row, state, fields; fenced) and
    claim what the site has next — the oldest queued download or upload, or a run of small
    new uploads (``_HAND_OVER``) — in one statement, so the slot passes straight on.
    Otherwise (nothing finished, or nothing taken that way) under the site's lock, like
    ``transfer_claim``. [] when there is nothing to take, the site is full, or a copy that
    could run is next (it gets the slot)."""
    if finished:
        taken = _hand_over(finished, site_id=site_id)
        if taken:
            return taken
    limit = per_site_limit()
    with transaction.atomic():
        list(FtpSite.objects.select_for_update().filter(pk=site_id))
        if _running_on(site_id) >= limit:
            return []
        waiting = (
            Transfer.objects.filter(Q(site_id=site_id) | Q(target_site_id=site_id))
            .filter(state=State.QUEUED)
            .order_by("id")
            .values_list("pk", "kind", "site_id", "target_site_id")[: 2 * limit + 1]
        )
        for transfer_id, kind, source_id, target_id in waiting:
            if kind == Kind.COPY:
                others = {source_id, target_id} - {site_id, None}
                if all(_running_on(other) < limit for other in others):
                    return []  # hand the slot back; the kick lets the copy's task take it
                continue
            row = _take(transfer_id)
            if row is not None:
                return [row]
    return []


# A runner's hot path in one round trip: finish its transfers (each fenced by state and
# claim) and, only if one of them was still ours, take what the site has next (index
# transfer_site_queue; a copy waits for a runner to hand its slot back, within
# RUNNER_SECONDS): the oldest queued download or upload — and when that is a small upload
# never tried before, the run of such uploads queued after it, up to BATCH_MAX, which the
# runner then stores together (``_store_batch``).
# All rows change in one commit, so the site's count of running transfers never drops
# between two transfers, and a claim elsewhere (which counts under the site lock) sees
# either state, both valid. A batch counts as several running rows there: it can keep a
# new runner from starting, never let one too many start.
# SKIP LOCKED: the site's other runner, handing over at the same moment, takes the next
# rows instead of queueing behind ours for the same ones.
_TABLE = Transfer._meta.db_table
_HAND_OVER = f"""
WITH finished AS (
    UPDATE {_TABLE} AS t
       SET state = f.state, finished_at = %(now)s, heartbeat_at = %(now)s,
           sha256 = COALESCE(f.sha256, t.sha256),
           bytes_done = COALESCE(f.bytes_done, t.bytes_done),
           last_error = COALESCE(f.last_error, t.last_error)
      FROM unnest(%(ids)s::bigint[], %(claims)s::integer[], %(states)s::text[],
                  %(sha256s)s::text[], %(bytes_done)s::bigint[], %(errors)s::text[])
           AS f(id, claim, state, sha256, bytes_done, last_error)
     WHERE t.id = f.id AND t.state = %(running)s AND t.claim = f.claim
    RETURNING t.id
), head AS (
    SELECT id, (kind = %(upload)s AND bytes_total <= %(small)s AND attempts = 0
                AND sha256 <> '') AS small
      FROM {_TABLE}
     WHERE site_id = %(site)s AND state = %(queued)s AND kind <> %(copy)s
     ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT id, row_number() OVER w AS k, bool_and(small) OVER w AS run
                      FROM head WINDOW w AS (ORDER BY id)) AS ranked
     WHERE k = 1 OR run
), taken AS (
    UPDATE {_TABLE}
       SET state = %(running)s, claim = claim + 1, attempts = attempts + 1,
           heartbeat_at = %(now)s, started_at = %(now)s, last_error = ''
     WHERE id IN (SELECT id FROM picked) AND EXISTS (SELECT 1 FROM finished)
    RETURNING *
)
SELECT ARRAY(SELECT id FROM finished), taken.*
  FROM (SELECT 1) AS one LEFT JOIN taken ON true ORDER BY taken.id
"""  # noqa: S608 — only the model's own table name is interpolated


def _hand_over(finished: list[Finish], *, site_id: int) -> list[Transfer]:
    """``_HAND_OVER``: the rows now ours, oldest first (``row.state`` of each finished row
    tells whether it was finished or had stopped being ours)."""
    now = timezone.now()
    params = {
        "now": now,
        "ids": [row.pk for row, _, _ in finished],
        "claims": [row.claim for row, _, _ in finished],
        "states": [state for _, state, _ in finished],
        "sha256s": [fields.get("sha256") for _, _, fields in finished],
        "bytes_done": [fields.get("bytes_done") for _, _, fields in finished],
        "errors": [fields.get("last_error") for _, _, fields in finished],
        "site": site_id,
        "running": State.RUNNING,
        "queued": State.QUEUED,
        "copy": Kind.COPY,
        "upload": Kind.UPLOAD,
        "small": ftp.DIRECT_STORE_MAX,
        "batch": BATCH_MAX,
    }
    with connection.cursor() as cursor:
        cursor.execute(_HAND_OVER, params)
        results = cursor.fetchall()
        columns = [column.name for column in cursor.description[1:]]
    done = set(results[0][0])
    for row, state, fields in finished:
        if row.pk in done:
            _finished(row, {**fields, "state": state, "finished_at": now, "heartbeat_at": now})
    # RETURNING * comes in the table's column order; a row of NULLs when nothing was taken.
    names = [f.attname for f in Transfer._meta.concrete_fields]
    order = [1 + columns.index(f.column) for f in Transfer._meta.concrete_fields]
    taken_id = 1 + columns.index("id")
    return [
        Transfer.from_db(connection.alias, names, [result[i] for i in order])
        for result in results
        if result[taken_id] is not None
    ]


def _kick_site_queue(site_ids: list[int]) -> None:
    """Slots on these sites were handed back: enqueue their oldest queued transfers (a
    task that claims one becomes the site's runner and drains the rest)."""
    limit = per_site_limit()
    for site_id in site_ids:
        waiting = (
            Transfer.objects.filter(Q(site_id=site_id) | Q(target_site_id=site_id))
            .filter(state=State.QUEUED)
            .order_by("id")
            .values_list("pk", flat=True)[: 2 * limit]
        )
        for transfer_id in list(waiting):
            transaction.on_commit(lambda transfer_id=transfer_id: _enqueue(transfer_id))


# Running ----------------------------------------------------------------------------------


class _Ticker:
    """The engine's progress callback: every ~0.5 s, a fenced heartbeat + bytes_done write
    (no row written -> TransferStopped) and a ``transfer.progress`` event with speed/ETA."""

    def __init__(self, transfer: Transfer) -> None:
        self.transfer = transfer
        self.last_at = time.monotonic()
        self.last_done = transfer.bytes_done
        self.speed: float | None = None

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last_at < TICK_SECONDS:
            return
        self.tick(done, now)

    def tick(self, done: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        elapsed = now - self.last_at
        if elapsed > 0 and done >= self.last_done:
            current = (done - self.last_done) / elapsed
            self.speed = current if self.speed is None else 0.5 * self.speed + 0.5 * current
        self.last_at, self.last_done = now, done
        self.write(bytes_done=done)
        total = self.transfer.bytes_total
        eta = None
        if self.speed and total is not None:
            eta = round(max(0, total - done) / self.speed, 1)
        speed = round(self.speed) if self.speed is not None else None
        _announce(self.transfer, speed=speed, eta=eta)

    def write(self, **fields: Any) -> None:
        row = self.transfer
        fields["heartbeat_at"] = timezone.now()
        updated = Transfer.objects.filter(pk=row.pk, state=State.RUNNING, claim=row.claim).update(
            **fields
        )
        if not updated:
            raise TransferStopped
        for name, value in fields.items():
            setattr(row, name, value)


def _retryable(exc: ftp.FtpError) -> bool:
    if isinstance(exc, ftp.FtpCertificateError):
        return False
    if isinstance(exc, ftp.FtpTransferError | ftp.FtpConnectionError):
        return True
    return isinstance(exc, ftp.FtpCommandError) and exc.code in (421, 425, 426, 450, 451)


def _error_text(exc: ftp.FtpError) -> str:
    words = str(exc)  # the reply code and the server's words
    if exc.explanation and exc.explanation != exc.reply:
        return f"{words} — {exc.explanation}"
    return words


class _SiteSession:
    """A runner's logged-in session to its site: opened when first needed, kept from one
    transfer to the next, opened again only after the connection was lost."""

    def __init__(self, site: FtpSite) -> None:
        self.site = site
        self.session: ftp.FtpSession | None = None

    def get(self) -> ftp.FtpSession:
        if self.session is None or not self.session.alive:
            self.session = ftp.FtpSession(ftp_config(self.site))
        return self.session

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def transfer_run(*, transfer_id: int) -> str:
    """What the task calls: claim the transfer and run it; a download or upload makes this
    worker its site's runner (module docstring). Returns what happened to this transfer
    ("busy", "skipped", or its state afterwards)."""
    row, busy = transfer_claim(transfer_id=transfer_id)
    if row is None:
        return "busy" if busy else "skipped"
    if row.kind == Kind.COPY:
        outcome = _execute(row, None)
        if outcome is not None:
            _finish(row, outcome[0], **outcome[1])
        _kick_site_queue(_site_ids(row))
        event_sender().flush()
    else:
        _run_site(row)
    return Transfer.objects.get(pk=transfer_id).state


def _run_site(row: Transfer) -> None:
    """Run ``row``, then what the site has queued next over one session, until none is
    left to claim or ``RUNNER_SECONDS`` have passed."""
    site_id = row.site_id
    session = _SiteSession(row.site)
    until = time.monotonic() + RUNNER_SECONDS
    current = [row]
    _quick_commits(True)
    try:
        while current:
            finished = _finish_hashing(_run_all(current, session))
            if time.monotonic() < until:
                current = _claim_next(site_id=site_id, finished=finished)
            else:
                current = []
                for ran, state, fields in finished:
                    _finish(ran, state, **fields)
            for ran, _, _ in finished:
                if ran.state == State.DONE:  # set only when the row was still ours
                    _drop_upload_source(ran)
    finally:
        session.close()
        _quick_commits(False)
        _kick_site_queue([site_id])
        event_sender().flush()


def _finish_hashing(finished: list[Finish]) -> list[Finish]:
    """Big downloads are done once their data is checked (226 reply and size): marked done
    and announced now, then hashed (SHA-256, from the page cache, ~1 GiB a second) and given
    their sha256 before the runner goes on. Hashing while the data arrived took the CPU the
    transfer and a local server needed (two cores), and delayed "done" by as much. The
    others are returned, to be finished with the hand-over."""
    rest = []
    for row, state, fields in finished:
        local = fields.pop("hash_after", None)
        if local is None:
            rest.append((row, state, fields))
        elif _finish(row, state, **fields):
            _record_hash(row, local)
    return rest


def _record_hash(row: Transfer, local: Path) -> None:
    try:
        sha256 = _file_sha256(local)
    except OSError:  # the file went meanwhile (its owner deleted the transfer)
        return
    if Transfer.objects.filter(pk=row.pk, claim=row.claim, state=State.DONE).update(sha256=sha256):
        row.sha256 = sha256
        _announce(row)


def _run_all(rows: list[Transfer], session: _SiteSession) -> list[Finish]:
    """What became of the rows a runner claimed: several are a batch of small uploads."""
    if len(rows) > 1:
        return _store_batch(rows, session)
    return _run_each(rows, session)


def _run_each(rows: list[Transfer], session: _SiteSession) -> list[Finish]:
    outcomes = ((row, _execute(row, session)) for row in rows)
    return [(row, *outcome) for row, outcome in outcomes if outcome is not None]


def _store_batch(rows: list[Transfer], session: _SiteSession) -> list[Finish]:
    """Small new uploads claimed together (``_HAND_OVER``), stored folder by folder with
    ``FtpSession.store_all``: straight to their names, their sizes checked by one listing of
    the folder — three round trips less per file than ``_upload``, and no row written
    between two files. No run lock: the rows were claimed just now and never tried before,
    so no other worker holds them (the sweeper waits minutes). When a folder's files fail
    together (a refusal, a lost connection, a local file gone), they are run again one by
    one, each with its own attempts, resume and error."""
    by_folder: dict[str, list[Transfer]] = {}
    for row in rows:
        by_folder.setdefault(posixpath.dirname(row.path), []).append(row)
    finished: list[Finish] = []
    for folder, group in by_folder.items():
        try:
            with contextlib.ExitStack() as files:
                sources = [
                    (posixpath.basename(row.path), files.enter_context(open(row.local_path, "rb")),
                     row.bytes_total)
                    for row in group
                ]  # fmt: skip
                session.get().store_all(folder, sources)
        except (ftp.FtpError, OSError, ValueError):
            finished += _run_each(group, session)
            continue
        for row in group:
            row.bytes_done = row.bytes_total
            fields = {"sha256": row.sha256, "bytes_done": row.bytes_total}
            finished.append((row, State.DONE, fields))
    return finished


def _quick_commits(on: bool) -> None:
    """A runner's commits do not wait for the WAL flush (~0.5-1.5 ms each, per file): the
    state machine already survives losing its last writes, as when a worker dies — a lost
    "done" leaves the row running, the sweeper queues it again and the rerun finds the work
    done (REST at the full size, or an upload written again whole)."""
    with contextlib.suppress(Exception), connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF" if on else "RESET synchronous_commit")


def _execute(row: Transfer, session: _SiteSession | None) -> tuple[str, dict[str, Any]] | None:
    """Attempt after attempt until the transfer is done or failed: (state, fields to write),
    or None when it is no longer ours (paused, cancelled, swept). ``session``: the
    runner's session (None for a copy, which opens its own two)."""
    ticker = _Ticker(row)
    try:
        with _run_lock(row):
            sha256 = _attempts(row, ticker, session)
    except TransferStopped:
        _stopped(row)
        return None
    except ftp.FtpError as exc:
        return State.FAILED, {"last_error": _error_text(exc)}
    except ValueError as exc:  # bad path, reserved name...
        return State.FAILED, {"last_error": str(exc)}
    except OSError as exc:  # the local disk
        return State.FAILED, {"last_error": f"Local file error: {exc}"}
    if isinstance(sha256, Path):
        return State.DONE, {"bytes_done": row.bytes_done, "hash_after": sha256}
    return State.DONE, {"sha256": sha256, "bytes_done": row.bytes_done}


def _drop_upload_source(row: Transfer) -> None:
    if row.kind == Kind.UPLOAD and row.local_path:
        with contextlib.suppress(OSError):
            os.unlink(row.local_path)


def _attempts(row: Transfer, ticker: _Ticker, session: _SiteSession | None) -> str | Path:
    """Attempt after attempt (each counted in the row; the claim counted the first) until
    done; the file's sha256 (or, for a big download, the file to hash: ``_download``)."""
    first = True
    while True:
        try:
            fresh = first and row.bytes_done == 0
            if session is None:
                return _copy(row, ticker, fresh=fresh)
            run = _download if row.kind == Kind.DOWNLOAD else _upload
            return run(row, ticker, session.get(), fresh=fresh)
        except ftp.FtpError as exc:
            if not _retryable(exc) or row.attempts >= max_attempts():
                raise
            ticker.write(last_error=_error_text(exc))
            _announce(row)
            _sleep_checked(ticker, min(30.0, backoff_base() * 2 ** (row.attempts - 1)))
            ticker.write(attempts=row.attempts + 1)
        first = False


def _sleep_checked(ticker: _Ticker, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, TICK_SECONDS))
        ticker.write()  # heartbeat; raises TransferStopped on pause/cancel


def _session(site: FtpSite) -> ftp.FtpSession:
    return ftp.FtpSession(ftp_config(site))


def _download(
    row: Transfer, ticker: _Ticker, session: ftp.FtpSession, *, fresh: bool
) -> str | Path:
    """The file's SHA-256; for a file of more than ``HASH_INLINE_MAX`` bytes, the file to
    hash once the download is marked done (``_finish_hashing``)."""
    if row.local_path:
        local = Path(row.local_path)
    else:
        directory = transfer_dir(owner_id=row.owner_id, transfer_id=row.pk)
        local = directory / row.name
        ticker.write(local_path=str(local))
    local.parent.mkdir(parents=True, exist_ok=True)
    if fresh and local.exists():
        local.unlink()
    total = session.size(row.path)
    if total is not None and total != row.bytes_total:
        ticker.write(bytes_total=total)
    sink = _LocalSink(local)
    try:
        offset = sink.size
        try:
            done = session.download(row.path, sink, offset=offset, progress=ticker)  # type: ignore[arg-type]
        except ftp.FtpTransferError as exc:
            if exc.bytes_done is not None and exc.bytes_done < sink.size:
                sink.truncate(exc.bytes_done)  # the remote file changed: keep what is good
            raise
        if sink.size != done or (row.bytes_total is not None and sink.size != row.bytes_total):
            raise ftp.FtpTransferError(
                f"The local file has {sink.size} bytes, expected {row.bytes_total or done}.",
                explanation="The downloaded file does not have the expected size.",
                bytes_done=min(sink.size, done),
            )
    finally:
        sink.close()
    row.bytes_done = done
    return local if done > HASH_INLINE_MAX else _file_sha256(local)


def _upload(row: Transfer, ticker: _Ticker, session: ftp.FtpSession, *, fresh: bool) -> str:
    """The file's sha256 was taken as it arrived (``transfer_create``), so the worker's
    cores all go to sending; a row from before that is hashed alongside. A small file's
    first attempt goes straight to its name (``FtpSession.store``); otherwise it goes to
    the temporary name, resumed from what the server holds."""
    local = Path(row.local_path)
    size = local.stat().st_size
    if row.bytes_total != size:
        ticker.write(bytes_total=size)
    with open(local, "rb", buffering=0) as source:
        if fresh and size <= ftp.DIRECT_STORE_MAX:  # straight to its name, as store does
            session.store(row.path, source, size=size, progress=ticker)
            done = size
        else:
            offset = 0 if fresh else min(session.upload_offset(row.path), size)
            source.seek(offset)
            done = session.upload(row.path, source, offset=offset, size=size, progress=ticker)
    row.bytes_done = done
    return row.sha256 or _file_sha256(local)


class _PipeReader:
    """The upload's source in a copy: chunks from a bounded queue, read like a file."""

    def __init__(self, chunks: queue.Queue) -> None:
        self.chunks = chunks
        self.pending = memoryview(b"")
        self.ended = False

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        while not self.pending and not self.ended:
            item = self.chunks.get()
            if item is None:
                self.ended = True
            elif isinstance(item, BaseException):
                raise item
            else:
                self.pending = memoryview(item)
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        buffer = bytearray(size if size and size > 0 else 1024 * 1024)
        n = self.readinto(buffer)
        return bytes(buffer[:n])


class _Hasher:
    """sha256 of the source's bytes in order, with snapshots every HASH_CHECKPOINT bytes so a
    resumed copy re-reads at most that much to continue the hash."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.position = 0
        self.snapshots: dict[int, Any] = {0: hashlib.sha256()}

    def rewind(self, offset: int) -> int:
        """Back to the last snapshot at or before ``offset``; returns its position."""
        start = max(p for p in self.snapshots if p <= offset)
        self.digest = self.snapshots[start].copy()
        self.position = start
        return start

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            boundary = (self.position // HASH_CHECKPOINT + 1) * HASH_CHECKPOINT
            take = min(len(view), boundary - self.position)
            self.digest.update(view[:take])
            self.position += take
            view = view[take:]
            if self.position == boundary:
                self.snapshots[self.position] = self.digest.copy()


def _copy(row: Transfer, ticker: _Ticker, *, fresh: bool) -> str:
    """Download from the source site into an upload to the target, through a bounded queue
    (a thread reads, this thread writes); only the upload side touches the database."""
    hasher: _Hasher = getattr(row, "_hasher", None) or _Hasher()
    row._hasher = hasher  # kept across attempts within this run  # type: ignore[attr-defined]
    target_site = row.target_site or row.site
    with _session(target_site) as upload_session:
        offset = 0 if fresh else upload_session.upload_offset(row.target_path)
        with _session(row.site) as download_session:
            total = download_session.size(row.path)
            if total is not None and total != row.bytes_total:
                ticker.write(bytes_total=total)
            if total is not None and offset > total:
                offset = 0  # a leftover from another file: start again
            start = hasher.rewind(offset)
            chunks: queue.Queue = queue.Queue(maxsize=PIPE_CHUNKS)
            stop = threading.Event()
            reader = threading.Thread(
                target=_copy_reader,
                args=(download_session, row.path, start, offset, hasher, chunks, stop),
                name=f"transfer-{row.pk}-read",
                daemon=True,
            )
            reader.start()
            try:
                done = upload_session.upload(
                    row.target_path,
                    _PipeReader(chunks),
                    offset=offset,
                    size=total,
                    progress=ticker,
                )
            finally:
                stop.set()
                _drain(chunks)
                reader.join(timeout=30)
    if total is not None and done != total:
        raise ftp.FtpTransferError(
            f"Copied {done} of {total} bytes.",
            explanation="The copy came up short; it can be resumed.",
            bytes_done=done,
        )
    if hasher.position != done:
        raise ftp.FtpTransferError(
            f"Read {hasher.position} bytes but stored {done}.",
            explanation="The copy could not be verified; it can be resumed.",
            bytes_done=min(hasher.position, done),
        )
    ticker.write(bytes_done=done)
    return hasher.digest.hexdigest()


def _drain(chunks: queue.Queue) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            chunks.get_nowait()


def _copy_reader(
    session: ftp.FtpSession,
    path: str,
    start: int,
    skip_to: int,
    hasher: _Hasher,
    chunks: queue.Queue,
    stop: threading.Event,
) -> None:
    """Download ``path`` from ``start``: hash everything, queue what lies past ``skip_to``;
    then None (end) or the exception. Stops early when ``stop`` is set."""

    class Stopped(Exception):
        pass

    def put(item: object) -> None:
        while True:
            if stop.is_set():
                raise Stopped
            try:
                chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    class Sink:
        position = start

        def write(self, data) -> int:
            data = bytes(data)  # the engine reuses its buffer
            hasher.update(data)
            begin = self.position
            self.position += len(data)
            if self.position > skip_to:
                put(data[max(0, skip_to - begin) :])
            return len(data)

    try:
        session.download(path, Sink(), offset=start)
        put(None)
    except Stopped:
        return
    except BaseException as exc:  # handed to the upload side, which raises it
        with contextlib.suppress(Stopped):
            put(exc)


# Finishing --------------------------------------------------------------------------------


def _finish(row: Transfer, state: str, **fields: Any) -> bool:
    """running -> ``state`` if the row is still ours (fenced); announced once committed."""
    now = timezone.now()
    fields.update(state=state, finished_at=now, heartbeat_at=now)
    finished = Transfer.objects.filter(pk=row.pk, state=State.RUNNING, claim=row.claim).update(
        **fields
    )
    if finished:
        _finished(row, fields)
    return bool(finished)


def _finished(row: Transfer, fields: dict[str, Any]) -> None:
    """The in-memory row as written, and its event."""
    for name, value in fields.items():
        setattr(row, name, value)
    _announce(row, speed=None, eta=0 if row.state == State.DONE else None)


def _stopped(row: Transfer) -> None:
    """The owner paused or cancelled (or the row was re-queued): clean up what a cancel
    leaves behind; a pause keeps the partial file to resume from."""
    current = Transfer.objects.get(pk=row.pk)
    cancelled = current.state == State.CANCELLED
    if cancelled and current.kind == Kind.DOWNLOAD and current.local_path:
        with contextlib.suppress(OSError):
            os.unlink(current.local_path)
        Transfer.objects.filter(pk=row.pk, state=State.CANCELLED).update(bytes_done=0)


def transfer_file_path(*, transfer: Transfer) -> Path | None:
    """The finished download's local file, or None."""
    if transfer.kind != Kind.DOWNLOAD or transfer.state != State.DONE or not transfer.local_path:
        return None
    path = Path(transfer.local_path)
    return path if path.is_file() else None


def transfer_delete_files(*, transfer: Transfer) -> None:
    directory = transfer_dir(owner_id=transfer.owner_id, transfer_id=transfer.pk)
    shutil.rmtree(directory, ignore_errors=True)


# Sweeping ---------------------------------------------------------------------------------


def transfers_sweep_stale() -> int:
    """Queue again running transfers whose worker stopped reporting (killed, machine lost),
    and enqueue the oldest queued transfers of every site (a lost message or kick costs a
    minute at most; a task that claims one becomes the site's runner)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=lease_seconds())
    stale = Transfer.objects.filter(state=State.RUNNING, heartbeat_at__lt=cutoff)
    count = 0
    for transfer_id in list(stale.values_list("pk", flat=True)):
        # Conditional: a transfer that reported in the meantime is not swept.
        if stale.filter(pk=transfer_id).update(state=State.QUEUED, last_error=STALE_ERROR):
            row = Transfer.objects.filter(pk=transfer_id).first()
            if row is not None:
                _announce(row)
            count += 1
    queued = Transfer.objects.filter(state=State.QUEUED)
    site_ids = set(queued.values_list("site_id", flat=True).distinct())
    site_ids |= set(queued.exclude(target_site=None).values_list("target_site_id", flat=True))
    _kick_site_queue(sorted(site_ids))
    event_sender().flush()
    return count
