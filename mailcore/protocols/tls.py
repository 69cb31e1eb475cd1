"""TLS pieces every protocol engine shares: client contexts and certificate fingerprints.

A fingerprint is the SHA-256 of the server certificate's DER bytes, written "AA:BB:…". A
user may pin one for a server no CA vouches for (self-signed); it is compared in constant
time and in any spelling (case, colons). The FTP engine uses this module too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl


def fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _normal(value: str) -> str:
    return re.sub(r"[^0-9A-F]", "", value.upper())


def same_fingerprint(presented: str, pinned: str) -> bool:
    return bool(pinned) and hmac.compare_digest(_normal(presented), _normal(pinned))


def client_context(*, verify: bool, ca_file: str | None = None) -> ssl.SSLContext:
    """TLS 1.2+; verifying against the system CAs (and `ca_file`), or not at all.

    An unverified context is only for a pinned certificate, checked right after the
    handshake, or for reading the certificate a server presents; never for credentials
    without that check.
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
