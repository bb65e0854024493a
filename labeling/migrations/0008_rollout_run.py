from django.db import migrations, models


class Migration(migrations.Migration):
    """Rollouts record the trainer run that made them by id (trainer.0003 fills it in from the old job link)."""

    dependencies = [
        ('labeling', '0007_clip_render_started_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='rollout',
            name='run',
            field=models.PositiveIntegerField(blank=True, db_index=True, help_text='The run that made it.', null=True),
        ),
    ]
