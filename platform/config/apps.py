from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The composition root as an app: start-up work that belongs to the deployment, not to any one app."""

    name = "config"
    verbose_name = "Configuration"

    def ready(self) -> None:
        from .celery import ensure_broker_folders

        ensure_broker_folders()
