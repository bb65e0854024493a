"""Import a local Minari dataset's episodes into a project as rollouts and clips (an import_dataset run).

    manage.py import_minari pendulum/random-v0 --project pendulum [--max-episodes 50] [--queries 100] [--wait]

The dataset is an id under MINARI_DATASETS_PATH or any local path (the operator's choice; the API accepts only
datasets inside MINARI_DATASETS_PATH). Nothing is downloaded. With ``--wait`` the run's step is done here and
now instead of by a worker.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from labeling.errors import ServiceError
from labeling.models import Project


class Command(BaseCommand):
    help = "Import a locally available Minari dataset's episodes as rollouts and clips of a project."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("dataset", help="a dataset id under MINARI_DATASETS_PATH, or a local path")
        parser.add_argument("--project", required=True, help="the project's slug")
        parser.add_argument("--max-episodes", type=int, default=None)
        parser.add_argument("--queries", type=int, default=None, help="random pairwise queries to create")
        parser.add_argument("--wait", action="store_true", help="do the import here instead of in a worker")

    def handle(self, *args: Any, **options: Any) -> None:
        from unittest import mock

        from trainer import external_data, loop
        from trainer.loop_steps import STEP_WORK
        from trainer.models import Run

        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project {options['project']!r}")
        try:
            if options["wait"]:
                with mock.patch.object(loop, "_send_step", lambda *a: None):
                    run = self._start(external_data, project, options)
                    if run.state in run.steps:
                        loop.step_run(run.pk, run.state, STEP_WORK[run.state])
            else:
                run = self._start(external_data, project, options)
        except ServiceError as error:
            raise CommandError(error.message) from None
        run = Run.objects.get(pk=run.pk)
        self.stdout.write(f"{run.title}: {run.state} {run.message} {run.results or ''} {run.error}".rstrip())
        if run.state == "failed":
            raise CommandError(run.error)

    def _start(self, external_data: Any, project: Project, options: dict[str, Any]) -> Any:
        return external_data.minari_import_start(
            project=project,
            dataset=options["dataset"],
            created_by=None,
            max_episodes=options["max_episodes"],
            queries=options["queries"],
            inside_root=False,
        )
