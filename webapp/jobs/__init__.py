"""Jobs: long work run by Celery workers, with progress pushed live to the owner."""
