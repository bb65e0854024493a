"""Training artefacts: immutable preference sets and versioned reward models, each linked to what made it."""

from __future__ import annotations

from django.conf import settings as django_settings
from django.db import models
from django.utils import timezone

from labeling.models import Job, Project


class PreferenceSet(models.Model):
    """An immutable training-set snapshot: a Parquet file of pairs (clip_a, clip_b, target, weight, origin, level,
    annotator)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="preference_sets")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    iteration = models.ForeignKey(
        "Iteration", null=True, blank=True, on_delete=models.SET_NULL, related_name="preference_sets"
    )
    file = models.FileField(upload_to="preferences/%Y/%m/")
    sources = models.CharField(max_length=16, help_text="rankings, judgments or both")
    settings = models.JSONField(default=dict, help_text="How it was built (cap, margin scope, ties, α, seed).")
    rankings = models.JSONField(default=list, help_text="The rankings used, with their sigmas.")
    counts = models.JSONField(default=dict)
    n_pairs = models.PositiveIntegerField(default=0)
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the Parquet file.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"preference set {self.pk} ({self.n_pairs} pairs, {self.sources})"


class RewardModelStatus(models.TextChoices):
    TRAINING = "training", "Training"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class RewardModel(models.Model):
    """A version of a project's learned reward: config, metrics per epoch, safetensors weights + JSON metadata."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reward_models")
    version = models.PositiveIntegerField()
    preference_set = models.ForeignKey(PreferenceSet, on_delete=models.PROTECT, related_name="reward_models")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    iteration = models.ForeignKey(
        "Iteration", null=True, blank=True, on_delete=models.SET_NULL, related_name="reward_models"
    )
    config = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    history = models.JSONField(default=list)
    weights = models.FileField(upload_to="reward_models/%Y/%m/", blank=True)
    metadata = models.FileField(upload_to="reward_models/%Y/%m/", blank=True)
    status = models.CharField(max_length=16, choices=RewardModelStatus.choices, default=RewardModelStatus.TRAINING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "-version"]
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="reward_model_version_unique")]

    def __str__(self) -> str:
        return f"{self.project.slug} reward model v{self.version}"


class IterationState(models.TextChoices):
    QUEUED = "queued", "Queued"
    BUILDING_PREFERENCES = "building_preferences", "Building preferences"
    TRAINING_REWARD = "training_reward", "Training reward"
    TRAINING_POLICY = "training_policy", "Training policy"
    ROLLING_OUT = "rolling_out", "Rolling out"
    RENDERING = "rendering", "Rendering"
    PUBLISHING = "publishing", "Publishing"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# The steps in order; each one's task does its work and hands the iteration to the next.
ITERATION_STEPS: tuple[str, ...] = (
    IterationState.BUILDING_PREFERENCES,
    IterationState.TRAINING_REWARD,
    IterationState.TRAINING_POLICY,
    IterationState.ROLLING_OUT,
    IterationState.RENDERING,
    IterationState.PUBLISHING,
)
FINISHED_STATES: tuple[str, ...] = (IterationState.DONE, IterationState.FAILED, IterationState.CANCELLED)


class Iteration(models.Model):
    """One turn of the loop: labels → preference set → reward model → policy → clips → queries.

    ``state`` moves forward only through conditional updates (see ``trainer.loop``), so a step delivered
    twice runs once. ``heartbeat_at`` is set while a worker holds the current step; a step whose heartbeat
    is older than the stale limit is presumed dead and may be claimed again.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="iterations")
    number = models.PositiveIntegerField(help_text="1, 2, …; clips and queries it makes carry this number.")
    state = models.CharField(max_length=32, choices=IterationState.choices, default=IterationState.QUEUED)
    paused = models.BooleanField(default=False, help_text="A paused iteration finishes its current step, then waits.")
    settings = models.JSONField(default=dict, help_text="The resolved loop settings it runs with.")
    start_after_labels = models.PositiveIntegerField(
        null=True, blank=True, help_text="Pairwise mode: starts by itself once the project has this many labels."
    )
    follow_ups = models.PositiveIntegerField(default=0, help_text="Iterations still to queue after this one.")
    progress = models.FloatField(default=0.0, help_text="Of the current step, 0–1.")
    message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Claims of the current step (a retry counts).")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Set while a worker holds the step.")
    step_since = models.DateTimeField(null=True, blank=True, help_text="When the current step was entered.")
    preference_set = models.ForeignKey(
        PreferenceSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reward_model = models.ForeignKey(RewardModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="Policy continued from."
    )
    labels_used = models.PositiveIntegerField(default=0, help_text="Pairwise labels in its preference set.")
    results = models.JSONField(default=dict, blank=True, help_text="Per-step results: counts, timings, evaluation.")
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "-number"]
        constraints = [models.UniqueConstraint(fields=["project", "number"], name="iteration_number_unique")]
        indexes = [models.Index(fields=["state"], name="iteration_state")]

    def __str__(self) -> str:
        return f"{self.project.slug} iteration {self.number} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def step_index(self) -> int:
        """Steps completed: 0 while queued, len(ITERATION_STEPS) when done."""
        if self.state == IterationState.DONE:
            return len(ITERATION_STEPS)
        return ITERATION_STEPS.index(self.state) if self.state in ITERATION_STEPS else 0

    @property
    def overall_progress(self) -> float:
        """Across all steps, 0–1, for one progress bar."""
        if self.state == IterationState.DONE:
            return 1.0
        if self.state not in ITERATION_STEPS:
            return 0.0
        return (self.step_index + min(max(self.progress, 0.0), 1.0)) / len(ITERATION_STEPS)

    @property
    def percent(self) -> int:
        return round(100 * self.overall_progress)


class PolicyCheckpoint(models.Model):
    """A policy trained in an iteration: SB3 zip (loaded weights-only, never unpickled), its replay buffer as npz,
    and its evaluation on the true and the learned reward (so reward hacking shows)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="policies")
    iteration = models.OneToOneField(Iteration, on_delete=models.CASCADE, related_name="policy")
    reward_model = models.ForeignKey(
        RewardModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="policies",
        help_text="Empty: trained on the environment's true reward.",
    )
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    algorithm = models.CharField(max_length=16)
    timesteps = models.PositiveIntegerField(help_text="Cumulative environment steps of training.")
    config = models.JSONField(default=dict)
    model_file = models.FileField(upload_to="policies/%Y/%m/")
    replay_buffer = models.FileField(upload_to="policies/%Y/%m/", blank=True)
    evaluation = models.JSONField(default=dict, help_text="True and learned returns of evaluation episodes.")
    train_seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "-created_at"]

    def __str__(self) -> str:
        return f"{self.project.slug} policy of iteration {self.iteration.number} ({self.algorithm})"

    @property
    def true_return(self) -> float | None:
        return self.evaluation.get("true_mean")

    @property
    def learned_return(self) -> float | None:
        return self.evaluation.get("learned_mean")
