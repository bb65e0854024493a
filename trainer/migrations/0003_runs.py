"""One run model: trainer.Iteration becomes trainer.Run, and labeling's jobs are copied into it as runs."""

import django.db.models.deletion
from django.db import migrations, models

ITERATION_STEPS = [
    "building_preferences",
    "training_reward",
    "training_policy",
    "rolling_out",
    "rendering",
    "publishing",
]
JOB_KINDS = {
    "generate_clips": ["generating_clips"],
    "build_preferences": ["building_preferences"],
    "train_reward_model": ["training_reward"],
    "render_clips": ["rendering"],
}


def jobs_to_runs(apps, schema_editor):
    Job = apps.get_model("labeling", "Job")
    Rollout = apps.get_model("labeling", "Rollout")
    Run = apps.get_model("trainer", "Run")
    PreferenceSet = apps.get_model("trainer", "PreferenceSet")
    RewardModel = apps.get_model("trainer", "RewardModel")
    for run in Run.objects.all():
        run.steps = ITERATION_STEPS
        run.save(update_fields=["steps"])
        Rollout.objects.filter(project_id=run.project_id, iteration=run.number, job__isnull=True).update(run=run.pk)
    for job in Job.objects.order_by("id"):
        params = dict(job.params or {})
        kind = job.kind
        train = params.pop("train", True)
        if kind == "build_preferences" and train and job.status == "queued":
            kind = "retrain"  # it would have queued a training when done: a retrain does both
        steps = ["building_preferences", "training_reward"] if kind == "retrain" else JOB_KINDS[kind]
        if kind == "render_clips":
            params = {"clips": []}
        if job.status == "running":  # its worker belongs to the old code: the researcher retries it
            state, error = "failed", "Interrupted by the upgrade that made jobs into runs; retry it."
        else:
            state, error = job.status, job.error
        run = Run.objects.create(
            project_id=job.project_id,
            kind=kind,
            steps=steps,
            state=state,
            params=params,
            progress=job.progress,
            message=job.message,
            error=error,
            results={steps[0]: job.result} if job.status == "done" else {},
            created_by_id=job.created_by_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
        made_set = PreferenceSet.objects.filter(job_id=job.pk).first()
        made_model = RewardModel.objects.filter(job_id=job.pk).first()
        PreferenceSet.objects.filter(job_id=job.pk).update(run=run.pk)
        RewardModel.objects.filter(job_id=job.pk).update(run=run.pk)
        Rollout.objects.filter(job_id=job.pk).update(run=run.pk)
        if made_set is not None or made_model is not None:
            run.preference_set_id = made_set.pk if made_set else (made_model.preference_set_id if made_model else None)
            run.reward_model_id = made_model.pk if made_model else None
            run.save(update_fields=["preference_set", "reward_model"])


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0008_rollout_run"),
        ("trainer", "0002_iterations_and_policies"),
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="iteration", name="iteration_number_unique"),
        migrations.RemoveIndex(model_name="iteration", name="iteration_state"),
        migrations.RenameModel(old_name="Iteration", new_name="Run"),
        migrations.RenameField(model_name="preferenceset", old_name="iteration", new_name="run"),
        migrations.RenameField(model_name="rewardmodel", old_name="iteration", new_name="run"),
        migrations.RenameField(model_name="policycheckpoint", old_name="iteration", new_name="run"),
        migrations.AddField(
            model_name="run",
            name="kind",
            field=models.CharField(
                choices=[
                    ("iteration", "Loop iteration"),
                    ("retrain", "Retrain reward model"),
                    ("build_preferences", "Build preferences"),
                    ("train_reward_model", "Train reward model"),
                    ("generate_clips", "Generate clips"),
                    ("render_clips", "Render clips"),
                ],
                default="iteration",
                max_length=32,
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="steps",
            field=models.JSONField(default=list, help_text="The steps this run does, in order."),
        ),
        migrations.AddField(
            model_name="run",
            name="params",
            field=models.JSONField(blank=True, default=dict, help_text="What was asked for (clip counts, sources, …)."),
        ),
        migrations.AlterField(
            model_name="run",
            name="number",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Loop iterations: 1, 2, …; clips and queries it makes carry this number.",
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="run",
            name="paused",
            field=models.BooleanField(default=False, help_text="A paused run finishes its current step, then waits."),
        ),
        migrations.AlterField(
            model_name="run",
            name="settings",
            field=models.JSONField(
                blank=True, default=dict, help_text="Loop iterations: the resolved loop settings."
            ),
        ),
        migrations.AlterField(
            model_name="run",
            name="project",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="runs", to="labeling.project"
            ),
        ),
        migrations.AlterField(
            model_name="run",
            name="state",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("generating_clips", "Generating clips"),
                    ("building_preferences", "Building preferences"),
                    ("training_reward", "Training reward"),
                    ("training_policy", "Training policy"),
                    ("rolling_out", "Rolling out"),
                    ("rendering", "Rendering"),
                    ("publishing", "Publishing"),
                    ("done", "Done"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                ],
                default="queued",
                max_length=32,
            ),
        ),
        migrations.AlterModelOptions(name="run", options={"ordering": ["project", "-created_at", "-id"]}),
        migrations.RunPython(jobs_to_runs, migrations.RunPython.noop),
    ]
