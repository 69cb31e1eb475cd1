"""Satchel's Django project package.

The Celery app is imported here so that `shared_task`s bind to it in every process.
"""

from webapp.celery import app as celery_app

__all__ = ["celery_app"]
