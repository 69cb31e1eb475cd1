"""Mail protocol engines (IMAP, SMTP, POP3, MIME): plain Python, no Django imports."""
