import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from webapp.encrypted_fields import EncryptedTextField, decrypt, encrypt


def test_secret_is_stored_as_ciphertext_and_read_back():
    field = EncryptedTextField()
    stored = field.get_prep_value("hunter2 — päss")
    assert "hunter2" not in stored
    assert field.from_db_value(stored, None, None) == "hunter2 — päss"


def test_empty_and_null_stay_as_they_are():
    field = EncryptedTextField()
    assert field.get_prep_value("") == ""
    assert field.get_prep_value(None) is None
    assert field.from_db_value(None, None, None) is None


def test_rotation_keeps_old_secrets_readable(settings):
    old_key = settings.ENCRYPTION_KEYS[0]
    written_with_old_key = encrypt("imap-password")
    new_key = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new_key, old_key]
    assert decrypt(written_with_old_key) == "imap-password"
    rewritten = encrypt("imap-password")
    settings.ENCRYPTION_KEYS = [new_key]
    assert decrypt(rewritten) == "imap-password"


def test_a_missing_key_is_a_clear_error(settings):
    stored = encrypt("ftp-password")
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(ImproperlyConfigured, match="lacks the key it was written with"):
        decrypt(stored)


def test_a_malformed_key_is_a_clear_error(settings):
    settings.ENCRYPTION_KEYS = ["not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match="SATCHEL_ENCRYPTION_KEY must be Fernet keys"):
        encrypt("x")
