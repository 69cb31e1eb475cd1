from django.contrib.auth import views as auth_views
from django.urls import path

from webapp.core import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("settings/", views.settings_index, name="settings"),
    path("settings/token/", views.settings_token_regenerate, name="settings-token"),
    path("settings/check/", views.settings_check_start, name="settings-check"),
    path("healthz", views.healthz, name="healthz"),
]
