"""FTP / FTPS sites a user browses. Files stay on the servers; nothing is cached here."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from webapp.encrypted_fields import EncryptedTextField


class FtpSite(models.Model):
    class Security(models.TextChoices):
        NONE = "none", "None"
        EXPLICIT_TLS = "explicit_tls", "Explicit FTPS (AUTH TLS)"
        IMPLICIT_TLS = "implicit_tls", "Implicit FTPS"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ftp_sites"
    )
    name = models.CharField(max_length=100)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=21)
    security = models.CharField(max_length=16, choices=Security, default=Security.NONE)
    username = models.CharField(max_length=255, default="anonymous")
    password = EncryptedTextField(blank=True)
    passive = models.BooleanField(default=True)
    initial_path = models.CharField(max_length=1024, default="/")
    encoding = models.CharField(max_length=32, default="utf-8")
    # SHA-256 of a certificate the user chose to trust ("AA:BB:..."), as for mail accounts.
    tls_fingerprint = models.CharField(max_length=95, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.username}@{self.host}:{self.port})"


class Transfer(models.Model):
    """One background transfer; its row is the state machine a worker drives
    (ftpcore/transfers.py). ``claim`` is a fencing token: it grows at every claim, and a
    worker only writes while the row still carries the number it claimed with."""

    class Kind(models.TextChoices):
        DOWNLOAD = "download", "Download"
        UPLOAD = "upload", "Upload"
        COPY = "copy", "Copy"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        PAUSED = "paused"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED_STATES = (State.DONE, State.FAILED, State.CANCELLED)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ftp_transfers"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    site = models.ForeignKey(FtpSite, on_delete=models.CASCADE, related_name="transfers")
    path = models.CharField(max_length=4096)
    target_site = models.ForeignKey(
        FtpSite,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="incoming_transfers",
    )
    target_path = models.CharField(max_length=4096, blank=True)
    # Downloads: the file being written (then served); uploads: the uploaded file kept here.
    local_path = models.CharField(max_length=4096, blank=True)
    name = models.CharField(max_length=255, blank=True)  # the file's name, for downloads
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    claim = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["owner", "-id"], name="transfer_owner_recent"),
            models.Index(fields=["state", "heartbeat_at"], name="transfer_state_heartbeat"),
            models.Index(fields=["site", "state"], name="transfer_site_state"),
            models.Index(fields=["target_site", "state"], name="transfer_target_state"),
            # A site's queue, oldest first (runners take from it at every hand-over): only
            # queued rows, so the pick does not walk the site's whole history.
            models.Index(
                fields=["site", "id"], condition=Q(state="queued"), name="transfer_site_queue"
            ),
            models.Index(
                fields=["target_site", "id"],
                condition=Q(state="queued"),
                name="transfer_target_queue",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} {self.path} ({self.state})"


class UploadSession(models.Model):
    """A chunked, resumable upload from the browser (ftpcore/chunked.py). Chunks are
    appended to the remote temporary file; ``offset`` is how many bytes the server holds,
    confirmed. ``lease`` / ``lease_until`` let one request at a time write a chunk."""

    class State(models.TextChoices):
        OPEN = "open"
        DONE = "done"
        CANCELLED = "cancelled"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ftp_upload_sessions"
    )
    site = models.ForeignKey(FtpSite, on_delete=models.CASCADE, related_name="upload_sessions")
    path = models.CharField(max_length=4096)  # the final remote path
    size = models.BigIntegerField()
    offset = models.BigIntegerField(default=0)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    lease = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["owner", "-id"], name="upload_owner_recent")]

    def __str__(self) -> str:
        return f"Upload #{self.pk} {self.path} ({self.offset}/{self.size}, {self.state})"
