"""The FTP site form of the browser UI. Saving goes through ftpcore.services."""

from __future__ import annotations

from typing import Any

from django import forms

from ftpcore.models import FtpSite
from ftpcore.validators import clean_encoding, clean_initial_path
from webapp.validators import clean_fingerprint, clean_host, clean_single_line

# The port each kind of security listens on by default.
PORTS = {
    FtpSite.Security.NONE: 21,
    FtpSite.Security.EXPLICIT_TLS: 21,
    FtpSite.Security.IMPLICIT_TLS: 990,
}


def port_default(security: str) -> int:
    return PORTS.get(security, 21)


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
        return clean_host(self.cleaned_data.get("host"), example="ftp.example.org")

    def clean_username(self) -> str:
        username = (self.cleaned_data.get("username") or "").strip()
        return clean_single_line(username) or "anonymous"

    def clean_password(self) -> str:
        return clean_single_line(self.cleaned_data.get("password"))

    def clean_initial_path(self) -> str:
        return clean_initial_path(self.cleaned_data.get("initial_path"))

    def clean_encoding(self) -> str:
        return clean_encoding(self.cleaned_data.get("encoding"))

    def clean_tls_fingerprint(self) -> str:
        return clean_fingerprint(self.cleaned_data.get("tls_fingerprint"))

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
