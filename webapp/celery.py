"""The Celery application: queues default, mail and ftp; settings under CELERY_* in Django's."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("satchel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
