"""REST API v1 plumbing: errors, pagination, auth and the URL map (contract: shared/API.md)."""
