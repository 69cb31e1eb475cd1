"""Forms every app's pages share."""

from django import forms

from webapp.validators import clean_fingerprint


class TrustCertificateForm(forms.Form):
    """ "Trust this certificate": the SHA-256 a server presented, to pin for it."""

    fingerprint = forms.CharField(max_length=95)

    def clean_fingerprint(self) -> str:
        value = clean_fingerprint(self.cleaned_data["fingerprint"])
        if not value:
            raise forms.ValidationError("No certificate fingerprint was given.")
        return value
