from django.apps import AppConfig


class TrainerConfig(AppConfig):
    name = "trainer"
    verbose_name = "Trainer"

    def ready(self) -> None:
        from labeling import environments

        from .core.envs import PRESETS

        # labeling never imports trainer; it learns the available environments from this registration.
        for preset in PRESETS.values():
            environments.register(preset)
        from .project_task import resolve_environment

        # Any other allowed Gymnasium id (settings.ALLOWED_ENV_IDS) gets a preset derived from the registry.
        environments.register_resolver(resolve_environment)
        from labeling import project_specs

        from .project_specs import project_create_from_spec, project_spec

        # The API creates projects from specs, and reads them back, through this registration.
        project_specs.register(create=project_create_from_spec, export=project_spec)
        from labeling.signals import judgment_recorded, ranking_submitted, run_state_changed

        from .receivers import on_judgment_recorded, on_ranking_submitted, on_run_state_changed

        ranking_submitted.connect(on_ranking_submitted, dispatch_uid="trainer.on_ranking_submitted")
        judgment_recorded.connect(on_judgment_recorded, dispatch_uid="trainer.on_judgment_recorded")
        # A done iteration's metrics go to TensorBoard / MLflow (trainer.tracking).
        run_state_changed.connect(on_run_state_changed, dispatch_uid="trainer.on_run_state_changed")
        from labeling import pending_work

        from .loop import new_questions_coming

        pending_work.register("trainer.runs", new_questions_coming)
        from labeling.admin import project_action_register

        from .admin import PROJECT_ACTIONS

        # Project actions appear on labeling's project admin without labeling importing trainer.
        for action in PROJECT_ACTIONS:
            project_action_register(action)
