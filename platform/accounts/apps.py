from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Connects the receiver that forgets a username's failed logins after it logs in successfully.
        from . import lockout  # noqa: F401
