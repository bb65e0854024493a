"""At most one queued preference build and one queued reward-model training per project.

Rows queued before this rule are merged first: the newest queued job of each (project, kind) stays queued, the
older ones are closed as failed with a note (they never ran; a message still in the broker for one of them finds
it no longer queued and does nothing).
"""

from django.db import migrations, models
from django.utils import timezone

KINDS = ["build_preferences", "train_reward_model"]


def close_duplicate_queued_jobs(apps, schema_editor):
    Job = apps.get_model("labeling", "Job")
    keep: dict[tuple[int, str], int] = {}
    queued = Job.objects.filter(status="queued", kind__in=KINDS).order_by("-created_at", "-id")
    for job in queued.only("id", "project_id", "kind"):
        newest = keep.setdefault((job.project_id, job.kind), job.pk)
        if newest != job.pk:
            Job.objects.filter(pk=job.pk, status="queued").update(
                status="failed",
                message="Superseded",
                error=f"Superseded by job #{newest}: one queued job of this kind per project.",
                finished_at=timezone.now(),
            )


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0005_skip_and_full_view"),
    ]

    operations = [
        migrations.RunPython(close_duplicate_queued_jobs, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind__in", KINDS), ("status", "queued")),
                fields=("project", "kind"),
                name="job_one_queued_build_or_training_per_project",
            ),
        ),
    ]
