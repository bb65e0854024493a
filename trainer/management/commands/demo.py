"""Seed a demo: users researcher / annotator1 / annotator2 and a Pendulum project with clips and queries."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Role, User
from accounts.services import researchers_group, user_create
from labeling.models import Project, ProjectRole
from labeling.services import membership_add, project_create
from trainer import loop
from trainer.loop_steps import STEP_WORK
from trainer.models import Run, RunKind, RunState

DEMO_SLUG = "pendulum-demo"
INSTRUCTIONS = """The pendulum should swing up and stay upright, pointing straight up, without spinning and
without wasting effort.

Watch both clips, then pick the one that behaves better: ← left, → right, ↑ if they are equally good,
↓ if you can't tell. Space pauses, , and . step one frame."""


class Command(BaseCommand):
    help = "Create the demo users and a Pendulum-v1 project with rendered clips and pairwise queries."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--rollouts", type=int, default=8, help="episodes to roll out (4 clips each)")
        parser.add_argument("--queries", type=int, default=40, help="pairwise queries to create")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, rollouts: int, queries: int, seed: int, **options: Any) -> None:
        password = str(settings.HERONRY["DEMO_PASSWORD"])
        with transaction.atomic():
            researchers_group()  # brings an older demo database's admin rights up to date
            researcher = self._user("researcher", password, Role.RESEARCHER)
            annotators = [self._user(f"annotator{i}", password, Role.ANNOTATOR) for i in (1, 2)]
            project = Project.objects.filter(slug=DEMO_SLUG).first()
            if project is None:
                project = project_create(
                    created_by=researcher,
                    name="Pendulum swing-up (demo)",
                    slug=DEMO_SLUG,
                    env_id="Pendulum-v1",
                    instructions=INSTRUCTIONS,
                    overlap=2,
                )
                # Small enough that a loop iteration takes a minute or two on a laptop CPU: it starts by itself
                # after 20 labels and trains SAC for 10 000 steps.
                project.loop_settings = {"label_budget": 20, "policy_timesteps": 10_000}
                project.save(update_fields=["loop_settings"])
            for annotator in annotators:
                membership_add(project=project, user=annotator, role=ProjectRole.ANNOTATOR)

        if project.clips.exists():
            self.stdout.write(f"Demo project already has {project.clips.count()} clips; leaving them as they are.")
        else:
            run = loop.run_start(
                project=project,
                kind=RunKind.GENERATE_CLIPS,
                created_by=researcher,
                params={"rollouts": rollouts, "queries": queries, "seed": seed},
            )
            self.stdout.write(f"Rolling out {rollouts} Pendulum episodes and rendering the clips to label…")
            # Here, before the worker starts, so the demo opens with clips to label; the task sent for the step
            # finds it done when the worker gets it.
            step = RunState.GENERATING_CLIPS
            if Run.objects.filter(pk=run.pk, state=step).exists():
                loop.step_run(run.pk, step, STEP_WORK[step])
            run.refresh_from_db()
            if run.state != RunState.DONE:
                raise SystemExit(f"clip generation failed: {run.error or run.state}")
            self.stdout.write(f"  {run.results.get(step, {})}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo ready: project '{project.name}' with {project.clips.count()} clips and "
                f"{project.queries.count()} queries. Logins: researcher, annotator1, annotator2 / password {password!r}"
            )
        )

    def _user(self, username: str, password: str, role: str) -> User:
        user = User.objects.filter(username=username).first()
        if user is not None:
            return user
        return user_create(username=username, password=password, role=role)
