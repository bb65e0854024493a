from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self) -> None:
        from accounts.tokens import project_resolver_set

        from . import selectors, webhooks

        webhooks.connect()
        project_resolver_set(selectors.project_id_for_token)
