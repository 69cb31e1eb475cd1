"""The mail account form of the browser UI. Saving goes through mailcore.services."""

from __future__ import annotations

from typing import Any

from django import forms

from mailcore.models import MailAccount, Security
from webapp.validators import clean_fingerprint, clean_host

# The port each kind of server listens on for each kind of security.
INCOMING_PORTS = {
    (MailAccount.Protocol.IMAP, Security.TLS): 993,
    (MailAccount.Protocol.IMAP, Security.STARTTLS): 143,
    (MailAccount.Protocol.IMAP, Security.NONE): 143,
    (MailAccount.Protocol.POP3, Security.TLS): 995,
    (MailAccount.Protocol.POP3, Security.STARTTLS): 110,
    (MailAccount.Protocol.POP3, Security.NONE): 110,
}
SMTP_PORTS = {Security.TLS: 465, Security.STARTTLS: 587, Security.NONE: 587}

SECRET_FIELDS = ("password", "smtp_password")


def incoming_port_default(protocol: str, security: str) -> int:
    return INCOMING_PORTS.get((protocol, security), 993)


def smtp_port_default(security: str) -> int:
    return SMTP_PORTS.get(security, 587)


class MailAccountForm(forms.ModelForm):
    """Add or edit an account. Passwords are write-only: left blank on edit, they are kept."""

    password = forms.CharField(
        label="Password",
        strip=False,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    smtp_password = forms.CharField(
        label="Password",
        strip=False,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    class Meta:
        model = MailAccount
        fields = [
            "email_address", "display_name", "name",
            "incoming_protocol", "incoming_host", "incoming_security", "incoming_port",
            "username", "password", "incoming_tls_fingerprint", "pop3_leave_on_server",
            "smtp_host", "smtp_security", "smtp_port", "smtp_username", "smtp_password",
            "smtp_tls_fingerprint",
        ]  # fmt: skip
        labels = {
            "email_address": "Email address",
            "display_name": "Your name",
            "name": "Account name",
            "incoming_protocol": "Protocol",
            "incoming_host": "Server",
            "incoming_security": "Security",
            "incoming_port": "Port",
            "username": "Username",
            "incoming_tls_fingerprint": "Trusted certificate (SHA-256)",
            "pop3_leave_on_server": "Leave messages on the server",
            "smtp_host": "Server",
            "smtp_security": "Security",
            "smtp_port": "Port",
            "smtp_username": "Username",
            "smtp_tls_fingerprint": "Trusted certificate (SHA-256)",
        }
        help_texts = {
            "name": "Shown in the folder list. Defaults to the email address.",
            "display_name": "Shown to the people you write to.",
            "incoming_tls_fingerprint": "Only for a server whose certificate no authority "
            "vouches for (self-signed). Test connection offers to fill it in.",
            "smtp_tls_fingerprint": "As above, for the SMTP server.",
            "smtp_username": "Leave blank to use the incoming username.",
        }
        error_messages = {
            "incoming_host": {"required": "Enter the server's host name, like imap.example.org."},
            "username": {"required": "Enter the username the server expects."},
            "email_address": {"required": "Enter your email address."},
        }
        widgets = {
            "email_address": forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
            "display_name": forms.TextInput(attrs={"autocomplete": "name"}),
            "incoming_host": forms.TextInput(
                attrs={"placeholder": "imap.example.org", "autocapitalize": "none"}
            ),
            "smtp_host": forms.TextInput(
                attrs={"placeholder": "smtp.example.org", "autocapitalize": "none"}
            ),
            "username": forms.TextInput(attrs={"autocomplete": "username"}),
            "incoming_tls_fingerprint": forms.TextInput(attrs={"class": "mono"}),
            "smtp_tls_fingerprint": forms.TextInput(attrs={"class": "mono"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.editing = self.instance.pk is not None
        self.fields["name"].required = False
        for name in ("incoming_port", "smtp_port"):
            label = self.fields[name].label
            self.fields[name] = forms.IntegerField(
                label=label,
                required=False,
                min_value=1,
                max_value=65535,
                help_text="Blank: the usual port for this security.",
            )
        if self.editing:
            for name in SECRET_FIELDS:
                self.fields[name].help_text = "Leave blank to keep the saved one."
                self.fields[name].widget.attrs["placeholder"] = "unchanged"
            if self.instance.smtp_username == self.instance.username:
                self.initial["smtp_username"] = ""
        else:
            self.fields["password"].required = True
            self.fields["smtp_password"].help_text = "Leave blank to use the incoming password."
            self.initial.setdefault("incoming_port", 993)
            self.initial.setdefault("smtp_port", 587)

    def clean_incoming_host(self) -> str:
        return clean_host(self.cleaned_data.get("incoming_host"), example="imap.example.org")

    def clean_smtp_host(self) -> str:
        smtp_host = self.cleaned_data.get("smtp_host")
        return clean_host(smtp_host, required=False, example="smtp.example.org")

    def clean_incoming_tls_fingerprint(self) -> str:
        return clean_fingerprint(self.cleaned_data.get("incoming_tls_fingerprint"))

    def clean_smtp_tls_fingerprint(self) -> str:
        return clean_fingerprint(self.cleaned_data.get("smtp_tls_fingerprint"))

    def clean_username(self) -> str:
        return (self.cleaned_data.get("username") or "").strip()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        protocol = data.get("incoming_protocol") or MailAccount.Protocol.IMAP
        if not data.get("incoming_port"):
            data["incoming_port"] = incoming_port_default(protocol, data.get("incoming_security"))
        if not data.get("smtp_port"):
            data["smtp_port"] = smtp_port_default(data.get("smtp_security"))
        if not data.get("name") and data.get("email_address"):
            data["name"] = data["email_address"][:100]
        return data

    def _post_clean(self) -> None:
        # The model's own validation would reject a blank password on edit (it is kept).
        for name in SECRET_FIELDS:
            if self.editing and not self.cleaned_data.get(name):
                self.cleaned_data.pop(name, None)
        super()._post_clean()

    def account_fields(self) -> dict[str, Any]:
        """The values to hand to services.account_create / account_update.

        A blank password on edit keeps the saved one. When the incoming password changes
        and the SMTP password had only ever been its copy, the copy follows along.
        """
        data = self.cleaned_data
        fields = {name: data[name] for name in self.Meta.fields if name in data}
        if not self.editing:
            return fields
        old = MailAccount.objects.get(pk=self.instance.pk)
        for name in SECRET_FIELDS:
            if not fields.get(name):
                fields.pop(name, None)
        copied = old.smtp_password == old.password
        if "password" in fields and "smtp_password" not in fields and copied:
            fields["smtp_password"] = ""  # services fill in the new incoming password
        return fields
