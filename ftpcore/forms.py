"""The FTP site form of the browser UI. Saving goes through ftpcore.services."""

from __future__ import annotations

import codecs
from typing import Any

from django import forms

from ftpcore.models import FtpSite
from mailcore.serializers import FINGERPRINT

# The port each kind of security listens on by default.
PORTS = {
    FtpSite.Security.NONE: 21,
    FtpSite.Security.EXPLICIT_TLS: 21,
    FtpSite.Security.IMPLICIT_TLS: 990,
}


def port_default(security: str) -> int:
    return PORTS.get(security, 21)


def _single_line(value: str) -> str:
    if any(c in (value or "") for c in "\r\n\0"):
        raise forms.ValidationError("Must not contain line breaks or NUL characters.")
    return value


def _fingerprint(value: str) -> str:
    value = (value or "").strip().upper()
    if value and not FINGERPRINT.match(value):
        raise forms.ValidationError(
            "A SHA-256 fingerprint is 32 hex byte pairs separated by colons (AA:BB:…)."
        )
    return value


class FtpSiteForm(forms.ModelForm):
    """Add or edit a site. The password is write-only: left blank on edit, it is kept."""

    password = forms.CharField(
        label="Password",
        strip=False,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    port = forms.IntegerField(
        label="Port",
        required=False,
        min_value=1,
        max_value=65535,
        help_text="Blank: 21, or 990 for implicit FTPS.",
    )

    class Meta:
        model = FtpSite
        fields = [
            "name", "host", "security", "port", "username", "password", "passive",
            "initial_path", "encoding", "tls_fingerprint",
        ]  # fmt: skip
        labels = {
            "name": "Site name",
            "host": "Server",
            "security": "Security",
            "username": "Username",
            "passive": "Passive mode (recommended; works through most firewalls)",
            "initial_path": "Start in folder",
            "encoding": "File name encoding",
            "tls_fingerprint": "Trusted certificate (SHA-256)",
        }
        help_texts = {
            "name": "Shown in the site picker. Defaults to the server name.",
            "username": "anonymous for public servers.",
            "encoding": "utf-8 for nearly every server; latin-1 or cp1251 for some old ones.",
            "tls_fingerprint": "Only for a server whose certificate no authority vouches for "
            "(self-signed). Test connection offers to fill it in.",
        }
        error_messages = {
            "host": {"required": "Enter the server's host name, like ftp.example.org."}
        }
        widgets = {
            "host": forms.TextInput(
                attrs={
                    "placeholder": "ftp.example.org",
                    "autocapitalize": "none",
                    "autofocus": True,
                }
            ),
            "username": forms.TextInput(attrs={"autocomplete": "username"}),
            "initial_path": forms.TextInput(attrs={"class": "mono"}),
            "tls_fingerprint": forms.TextInput(attrs={"class": "mono"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.editing = self.instance.pk is not None
        self.fields["name"].required = False
        self.fields["encoding"].required = False
        self.fields["initial_path"].required = False
        self.fields["username"].required = False
        if self.editing:
            self.fields["password"].help_text = "Leave blank to keep the saved one."
            self.fields["password"].widget.attrs["placeholder"] = "unchanged"
        else:
            self.fields["password"].help_text = "Blank for anonymous logins."
            self.initial.setdefault("port", 21)

    def clean_host(self) -> str:
        value = (self.cleaned_data.get("host") or "").strip()
        if not value or any(c.isspace() or c in "/@?#" for c in value):
            raise forms.ValidationError("Enter a host name or IP address, like ftp.example.org.")
        return value

    def clean_username(self) -> str:
        return _single_line((self.cleaned_data.get("username") or "").strip()) or "anonymous"

    def clean_password(self) -> str:
        return _single_line(self.cleaned_data.get("password") or "")

    def clean_initial_path(self) -> str:
        value = _single_line((self.cleaned_data.get("initial_path") or "").strip()) or "/"
        if not value.startswith("/"):
            raise forms.ValidationError("The folder starts with /, like /pub.")
        return value

    def clean_encoding(self) -> str:
        value = (self.cleaned_data.get("encoding") or "").strip() or "utf-8"
        try:
            name = codecs.lookup(value).name
        except LookupError:
            raise forms.ValidationError(f"Unknown encoding “{value}”.") from None
        if "USER x".encode(name, "ignore") != b"USER x":
            raise forms.ValidationError("The encoding must be ASCII-compatible (utf-8, latin-1…).")
        return value

    def clean_tls_fingerprint(self) -> str:
        return _fingerprint(self.cleaned_data.get("tls_fingerprint"))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not data.get("port"):
            data["port"] = port_default(data.get("security"))
        if not data.get("name") and data.get("host"):
            data["name"] = data["host"][:100]
        return data

    def _post_clean(self) -> None:
        if self.editing and not self.cleaned_data.get("password"):
            self.cleaned_data.pop("password", None)  # kept: not part of the update
        super()._post_clean()

    def site_fields(self) -> dict[str, Any]:
        """The values for services.site_create / site_update (no password: keep it)."""
        data = self.cleaned_data
        fields = {name: data[name] for name in self.Meta.fields if name in data}
        if self.editing and not fields.get("password"):
            fields.pop("password", None)
        return fields


class TrustCertificateForm(forms.Form):
    fingerprint = forms.CharField(max_length=95)

    def clean_fingerprint(self) -> str:
        value = _fingerprint(self.cleaned_data["fingerprint"])
        if not value:
            raise forms.ValidationError("No certificate fingerprint was given.")
        return value
