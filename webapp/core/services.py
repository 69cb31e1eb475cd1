from django.db import transaction
from rest_framework.authtoken.models import Token


def user_token_regenerate(*, user) -> Token:
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)
