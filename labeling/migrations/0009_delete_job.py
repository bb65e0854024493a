from django.db import migrations


class Migration(migrations.Migration):
    """Jobs became runs (trainer.0003_runs copies them over and runs before this)."""

    dependencies = [
        ('labeling', '0008_rollout_run'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='rollout',
            name='job',
        ),
        migrations.DeleteModel(
            name='Job',
        ),
    ]
