"""FTP / FTPS sites a user browses. Files stay on the servers; nothing is cached here."""

from django.conf import settings
from django.db import models

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
