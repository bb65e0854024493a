"""Create a project from a project spec file: ``manage.py project_create specs/cartpole.yaml --owner alice``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from labeling.errors import ValidationFailed
from trainer.project_specs import project_create_from_spec


class Command(BaseCommand):
    help = "Create a project from a YAML or JSON project spec (schema: README, 'Project specs')."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("spec", help="path of the spec file (YAML or JSON)")
        parser.add_argument("--owner", required=True, help="username of the researcher who owns the project")
        parser.add_argument("--slug", default="", help="use this slug instead of the spec's")

    def handle(self, *args: Any, spec: str, owner: str, slug: str, **options: Any) -> None:
        path = Path(spec)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"cannot read {path}: {error}") from None
        user = User.objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"no user {owner!r}")
        try:
            project = project_create_from_spec(created_by=user, spec=text, slug=slug or None)
        except ValidationFailed as error:
            details = json.dumps(error.fields, indent=2, ensure_ascii=False) if error.fields else ""
            raise CommandError(f"{error}\n{details}".rstrip()) from None
        self.stdout.write(f"created project {project.slug!r} ({project.env_id}, {project.factors.count()} factors)")
