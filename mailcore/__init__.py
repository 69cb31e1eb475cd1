"""Mail: IMAP, POP3 and SMTP accounts, the message cache, sending."""
