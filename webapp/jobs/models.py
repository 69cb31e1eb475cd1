from django.conf import settings
from django.db import models


class Job(models.Model):
    """One piece of long work for one user; its row is the state machine a worker drives."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Kind(models.TextChoices):
        CONNECTIVITY_CHECK = "connectivity_check", "Connectivity check"
        MAIL_SYNC = "mail_sync", "Mail sync"
        ATTACHMENT_SAVE_TO_FTP = "attachment_save_to_ftp", "Save attachment to FTP"

    FINISHED_STATES = (State.DONE, State.FAILED, State.CANCELLED)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs"
    )
    kind = models.CharField(max_length=64, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    done = models.BigIntegerField(default=0)
    total = models.BigIntegerField(null=True, blank=True)
    unit = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["owner", "-id"], name="job_owner_recent"),
            models.Index(fields=["state", "heartbeat_at"], name="job_state_heartbeat"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.state})"

    @property
    def percent(self) -> int | None:
        if not self.total:
            return 100 if self.state == self.State.DONE else None
        return min(100, round(100 * self.done / self.total))
