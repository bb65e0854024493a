"""Training artefacts: immutable preference sets and versioned reward models, each linked to what made it."""

from __future__ import annotations

from django.conf import settings as django_settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from labeling.models import Project


class PreferenceSet(models.Model):
    """An immutable training-set snapshot: a Parquet file of pairs (clip_a, clip_b, target, weight, origin, level,
    annotator)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="preference_sets")
    run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="preference_sets")
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
    run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="reward_models")
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


class RunKind(models.TextChoices):
    ITERATION = "iteration", "Loop iteration"
    RETRAIN = "retrain", "Retrain reward model"
    BUILD_PREFERENCES = "build_preferences", "Build preferences"
    TRAIN_REWARD_MODEL = "train_reward_model", "Train reward model"
    GENERATE_CLIPS = "generate_clips", "Generate clips"
    RENDER_CLIPS = "render_clips", "Render clips"
    UPLOAD = "upload", "Uploaded rollout"
    IMPORT_DATASET = "import_dataset", "Import dataset"


class RunState(models.TextChoices):
    QUEUED = "queued", "Queued"
    GENERATING_CLIPS = "generating_clips", "Generating clips"
    BUILDING_PREFERENCES = "building_preferences", "Building preferences"
    TRAINING_REWARD = "training_reward", "Training reward"
    TRAINING_POLICY = "training_policy", "Training policy"
    ROLLING_OUT = "rolling_out", "Rolling out"
    RENDERING = "rendering", "Rendering"
    PUBLISHING = "publishing", "Publishing"
    INGESTING = "ingesting", "Ingesting"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# What each kind of run does, step by step; a run stores its own list (``Run.steps``), so a manual retrain is a
# run of two of the loop's steps. Each step's task does its work and hands the run to its next step.
ITERATION_STEPS: tuple[str, ...] = (
    RunState.BUILDING_PREFERENCES,
    RunState.TRAINING_REWARD,
    RunState.TRAINING_POLICY,
    RunState.ROLLING_OUT,
    RunState.RENDERING,
    RunState.PUBLISHING,
)
KIND_STEPS: dict[str, tuple[str, ...]] = {
    RunKind.ITERATION: ITERATION_STEPS,
    RunKind.RETRAIN: (RunState.BUILDING_PREFERENCES, RunState.TRAINING_REWARD),
    RunKind.BUILD_PREFERENCES: (RunState.BUILDING_PREFERENCES,),
    RunKind.TRAIN_REWARD_MODEL: (RunState.TRAINING_REWARD,),
    RunKind.GENERATE_CLIPS: (RunState.GENERATING_CLIPS,),
    RunKind.RENDER_CLIPS: (RunState.RENDERING,),
    RunKind.UPLOAD: (RunState.INGESTING,),
    RunKind.IMPORT_DATASET: (RunState.INGESTING,),
}
# Kinds started by their own routes (an upload, a dataset import), never by POST …/runs/.
EXTERNAL_DATA_KINDS: tuple[str, ...] = (RunKind.UPLOAD, RunKind.IMPORT_DATASET)
STEP_STATES: tuple[str, ...] = tuple(
    state for state in RunState.values if state not in ("queued", "done", "failed", "cancelled")
)
FINISHED_STATES: tuple[str, ...] = (RunState.DONE, RunState.FAILED, RunState.CANCELLED)
# Kinds rebuilt from the project's current data: a request while one of them waits replaces the waiting one's
# parameters instead of queueing another (trainer.loop.run_start).
COALESCING_KINDS: tuple[str, ...] = (RunKind.RETRAIN, RunKind.BUILD_PREFERENCES, RunKind.TRAIN_REWARD_MODEL)


class Run(models.Model):
    """Background work on a project, as a list of steps: a loop iteration, a retrain, clip generation, a render.

    ``state`` is QUEUED, one of the run's ``steps``, or finished, and moves only by conditional updates (see
    ``trainer.loop``), so a step delivered twice runs once. ``heartbeat_at`` is set while a worker holds the
    current step; a step whose heartbeat is older than ``RUN_STALE_SECONDS`` is presumed dead and may be claimed
    again. At most one run of a project is inside a step at a time (a database constraint), so two trainings of
    one project never race; the others wait, queued, and start in order.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=32, choices=RunKind.choices, default=RunKind.ITERATION)
    steps = models.JSONField(default=list, help_text="The steps this run does, in order.")
    number = models.PositiveIntegerField(
        null=True, blank=True, help_text="Loop iterations: 1, 2, …; clips and queries it makes carry this number."
    )
    state = models.CharField(max_length=32, choices=RunState.choices, default=RunState.QUEUED)
    paused = models.BooleanField(default=False, help_text="A paused run finishes its current step, then waits.")
    params = models.JSONField(default=dict, blank=True, help_text="What was asked for (clip counts, sources, …).")
    settings = models.JSONField(default=dict, blank=True, help_text="Loop iterations: the resolved loop settings.")
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
        ordering = ["project", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="run_iteration_number_unique"),
            models.UniqueConstraint(
                fields=["project"], condition=Q(state__in=STEP_STATES), name="run_one_active_per_project"
            ),
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=Q(state="queued", kind__in=COALESCING_KINDS),
                name="run_one_queued_rebuild_per_kind",
            ),
        ]
        indexes = [models.Index(fields=["state"], name="run_state")]

    def __str__(self) -> str:
        return f"{self.project.slug} {self.title} ({self.state})"

    @property
    def title(self) -> str:
        if self.kind == RunKind.ITERATION:
            return f"iteration {self.number}"
        return f"{self.get_kind_display().lower()} #{self.pk}"

    @property
    def is_iteration(self) -> bool:
        return self.kind == RunKind.ITERATION

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def is_active(self) -> bool:
        return self.state in STEP_STATES

    @property
    def step_index(self) -> int:
        """Steps completed: 0 while queued, len(steps) when done."""
        if self.state == RunState.DONE:
            return len(self.steps)
        return self.steps.index(self.state) if self.state in self.steps else 0

    @property
    def overall_progress(self) -> float:
        """Across all its steps, 0–1, for one progress bar."""
        if self.state == RunState.DONE:
            return 1.0
        if self.state not in self.steps:
            return 0.0
        return (self.step_index + min(max(self.progress, 0.0), 1.0)) / len(self.steps)

    @property
    def percent(self) -> int:
        return round(100 * self.overall_progress)


class PolicyCheckpoint(models.Model):
    """A policy trained in an iteration: SB3 zip (loaded weights-only, never unpickled), its replay buffer as npz,
    and its evaluation on the true and the learned reward (so reward hacking shows)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="policies")
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="policy")
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
    # One evaluation episode of the policy, rendered so researchers can watch what it does (media are served to
    # members only, by frontend.views.policy_media, never as static files).
    video = models.FileField(upload_to="policies/%Y/%m/", blank=True)
    poster = models.FileField(upload_to="policies/%Y/%m/", blank=True)
    video_episode = models.JSONField(
        default=dict, blank=True, help_text="The rendered episode: seed, steps, true and learned return, or error."
    )
    train_seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "-created_at"]

    def __str__(self) -> str:
        return f"{self.project.slug} policy of iteration {self.run.number} ({self.algorithm})"

    @property
    def true_return(self) -> float | None:
        return self.evaluation.get("true_mean")

    @property
    def learned_return(self) -> float | None:
        return self.evaluation.get("learned_mean")


class ReviewScore(models.Model):
    """How a reward model sees one judged pair: the disagreement review's cache (trainer/review.py).

    Written once per (reward model, query) when the model is trained, so the review page and API sort and
    paginate rows instead of running the ensemble on every view. The humans' side (which judgments count) is
    read live, so a judgment marked wrong or a new answer to a pair sent back shows at once.
    """

    reward_model = models.ForeignKey(RewardModel, on_delete=models.CASCADE, related_name="review_scores")
    query = models.ForeignKey("labeling.Query", on_delete=models.CASCADE, related_name="review_scores")
    p_model = models.FloatField(help_text="Ensemble-mean P(clip_a ≻ clip_b), Bradley–Terry on the clip returns.")
    spread = models.FloatField(help_text="Std over ensemble members of P(clip_a ≻ clip_b).")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reward_model", "query"], name="review_score_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.reward_model} on query {self.query_id}: P(a) = {self.p_model:.2f}"
