"""The FTP/FTPS client engine: plain Python, no Django imports."""
