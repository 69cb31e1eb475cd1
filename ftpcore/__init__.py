"""Files: FTP and FTPS sites, browsing, background transfers."""
