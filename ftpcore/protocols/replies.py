"""FTP reply codes in plain words, for people who are not FTP experts.

The UI and the API show every server refusal as its code, the server's own words and the
explanation from this table (e.g. 452 "The server is out of space."). Codes come from
RFC 959, RFC 2228 (security), RFC 2428 (EPSV/EPRT), RFC 3659 (SIZE/MDTM/MLSD), RFC 4217
(FTPS) and common server practice. A code missing here still gets the meaning of its class
(the first digit), so ``explain`` never returns an empty string for a real code.
"""

from __future__ import annotations

__all__ = ["REPLIES", "explain", "is_transient"]

REPLIES: dict[int, str] = {
    # 1xx: positive preliminary — the command started, another reply follows.
    110: "Restart marker reply: the server noted where a transfer can be resumed.",
    120: "The server is starting up and will be ready in a few minutes.",
    125: "The data connection is already open; the transfer is starting.",
    150: "The server is opening the data connection for the transfer.",
    # 2xx: positive completion.
    200: "OK: the command was accepted.",
    202: "The command is not needed on this server (nothing to do).",
    211: "System status or list of supported features.",
    212: "Directory status.",
    213: "File status (for example its size or modification time).",
    214: "Help message from the server.",
    215: "The server's operating system type.",
    220: "The server is ready for a new user.",
    221: "The server closed the control connection (goodbye).",
    225: "The data connection is open; no transfer is in progress.",
    226: "The transfer finished successfully and the data connection was closed.",
    227: "Passive mode: the server told us where to open the data connection.",
    228: "Long passive mode entered.",
    229: "Extended passive mode: the server told us which port to connect to.",
    230: "Logged in.",
    231: "Logged out.",
    232: "Logged in; the security exchange was accepted.",
    234: "The server accepted the encryption (TLS) request.",
    235: "The security exchange completed.",
    250: "OK: the file action was completed.",
    257: "The folder was created (or this is the current folder).",
    # 3xx: positive intermediate — more information is needed.
    331: "User name accepted; a password is needed.",
    332: "An account is needed to log in.",
    334: "The server accepted the security mechanism; more data is needed.",
    335: "Security data accepted; more is needed.",
    336: "User name accepted; a challenge response is needed.",
    350: "The server is waiting for the next step (for example the new name of a rename).",
    # 4xx: transient negative — the command failed but may succeed if tried again later.
    421: "The server is closing the connection (it may be shutting down, "
    "too busy, or the session timed out). Try again later.",
    425: "Could not open the data connection. A firewall or NAT may be blocking it; "
    "switching between passive and active mode may help.",
    426: "The transfer was aborted: the data connection closed before it finished.",
    430: "Invalid user name or password.",
    431: "The security resource is not available right now.",
    434: "The requested host is not available.",
    450: "The file is unavailable right now (it may be busy or locked). Try again later.",
    451: "The server hit a local error while processing the request. Try again later.",
    452: "The server is out of space (not enough storage for the file).",
    # 5xx: permanent negative — retrying the same command will fail the same way.
    500: "The server did not understand the command.",
    501: "The server refused the command's arguments (bad name, path or value).",
    502: "The server does not support this command.",
    503: "Commands were sent in the wrong order.",
    504: "The server does not support this option of the command.",
    521: "The server does not support that data protection level.",
    522: "The server refused the encrypted data connection (it may require the TLS "
    "session to be reused, or a different network protocol).",
    530: "Login refused: wrong user name or password, or the account may not log in.",
    532: "An account is needed to store files.",
    533: "Encryption is required for this request.",
    534: "TLS is required by the server, or the server refuses the requested protection level.",
    535: "The security check (integrity) failed.",
    536: "The requested data protection level is not supported.",
    550: "The file or folder is unavailable: it does not exist, or you do not have "
    "permission to use it.",
    551: "The request was aborted: unknown page type.",
    552: "The transfer was aborted: the storage quota was exceeded.",
    553: "The file name is not allowed by the server.",
    554: "The request failed: the resume position or request is invalid.",
    555: "The request failed: type or structure mismatch.",
    # 6xx: protected replies (RFC 2228).
    631: "An integrity-protected reply.",
    632: "A confidentiality- and integrity-protected reply.",
    633: "A confidentiality-protected reply.",
}

_CLASSES = {
    1: "The server started the action; another reply will follow.",
    2: "The command succeeded.",
    3: "The server needs more information to continue.",
    4: "The command failed for now; it may work if tried again later.",
    5: "The server refused the command.",
    6: "A protected reply from the server.",
}


def explain(code: int | None) -> str:
    """Plain-words meaning of an FTP reply code ("" when there is no code)."""
    if code is None:
        return ""
    try:
        return REPLIES[code]
    except KeyError:
        return _CLASSES.get(code // 100, "An unexpected reply from the server.")


def is_transient(code: int | None) -> bool:
    """True for 4xx replies, which RFC 959 says may succeed when retried."""
    return code is not None and 400 <= code < 500
