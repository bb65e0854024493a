"""Runs, second half: the old job links go and the run constraints arrive.

Separate from 0003 because PostgreSQL refuses to alter a table in the transaction that just updated its rows
(pending foreign-key trigger events); each migration runs in its own transaction.
"""

from django.db import migrations, models

STEP_STATES = [
    "generating_clips",
    "building_preferences",
    "training_reward",
    "training_policy",
    "rolling_out",
    "rendering",
    "publishing",
]


class Migration(migrations.Migration):
    dependencies = [("trainer", "0003_runs")]
    run_before = [("labeling", "0009_delete_job")]

    operations = [
        migrations.RemoveField(model_name="preferenceset", name="job"),
        migrations.RemoveField(model_name="rewardmodel", name="job"),
        migrations.AddConstraint(
            model_name="run",
            constraint=models.UniqueConstraint(fields=("project", "number"), name="run_iteration_number_unique"),
        ),
        migrations.AddConstraint(
            model_name="run",
            constraint=models.UniqueConstraint(
                condition=models.Q(state__in=STEP_STATES),
                fields=("project",),
                name="run_one_active_per_project",
            ),
        ),
        migrations.AddConstraint(
            model_name="run",
            constraint=models.UniqueConstraint(
                condition=models.Q(
                    ("kind__in", ("retrain", "build_preferences", "train_reward_model")), ("state", "queued")
                ),
                fields=("project", "kind"),
                name="run_one_queued_rebuild_per_kind",
            ),
        ),
        migrations.AddIndex(model_name="run", index=models.Index(fields=["state"], name="run_state")),
    ]
