from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Connects the receiver that forgets a username's failed logins after it logs in successfully.
        from django.db.models.signals import post_migrate

        from . import lockout, schema  # noqa: F401  (schema: the token authentication's OpenAPI extension)
        from .services import researchers_group_refresh

        post_migrate.connect(researchers_group_refresh, dispatch_uid="accounts.researchers_group_refresh")
