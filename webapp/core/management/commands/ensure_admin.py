"""Create the first admin user when there is none; print how to log in."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from webapp.config import env_str


class Command(BaseCommand):
    help = (
        "Create a superuser if none exists, from DJANGO_SUPERUSER_USERNAME / "
        "DJANGO_SUPERUSER_PASSWORD, else 'admin' with a generated password printed once."
    )

    def handle(self, *args, **options) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("Log in with your existing admin account.")
            return
        username = env_str("DJANGO_SUPERUSER_USERNAME") or "admin"
        password = env_str("DJANGO_SUPERUSER_PASSWORD")
        generated = not password
        password = password or secrets.token_urlsafe(12)
        email = env_str("DJANGO_SUPERUSER_EMAIL", "")
        users.objects.create_superuser(username=username, email=email, password=password)
        if generated:
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin user '{username}' with password: {password}\n"
                    "This password is shown only once; change it under /admin/."
                )
            )
        else:
            self.stdout.write(f"Created admin user '{username}' (password from the environment).")
