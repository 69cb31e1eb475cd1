"""Real network peers (IMAP/POP3, FTP, SMTP, a fault proxy) for the test suite.

Plain Python on purpose: nothing here imports Django, so the peers can also be
started by hand or from benchmarks.
"""
