from django.apps import AppConfig


class FtpcoreConfig(AppConfig):
    name = "ftpcore"
    verbose_name = "Files"
