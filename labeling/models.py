"""Projects, reward factors, rollouts and clips, queries, leases, judgments, and background jobs.

State changes live here as model methods (healthchecks' style) or in services.py when they span models.
`labeling` never imports `trainer`: the trainer reads these models and reacts to labeling's events.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

_Side = TypeVar("_Side")


def displayed_pair(clip_a: _Side, clip_b: _Side, swapped: bool) -> tuple[_Side, _Side]:
    """(left, right) as the annotator sees them: clip_b on the left when ``swapped``. The one place that maps a
    lease's or judgment's on-screen sides to the canonical clip_a/clip_b (works for clips and for their ids)."""
    return (clip_b, clip_a) if swapped else (clip_a, clip_b)


FACTOR_KEY_VALIDATOR = RegexValidator(r"^[a-z][a-z0-9_]{0,63}$", "use lower-case letters, digits and _")


class FeedbackMode(models.TextChoices):
    RANKING = "ranking", "Factor ranking"
    PAIRWISE = "pairwise", "Pairwise comparison"
    BOTH = "both", "Both"


class ProjectStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    ARCHIVED = "archived", "Archived"


class Project(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, help_text="Shown to annotators; Markdown.")
    env_id = models.CharField(
        max_length=100, help_text='Gymnasium id (e.g. "Pendulum-v1"), or "external" for uploaded rollouts.'
    )
    env_kwargs = models.JSONField(default=dict, blank=True)
    episode_steps = models.PositiveIntegerField(
        null=True, blank=True, help_text="Steps per generated episode; empty: the environment's default."
    )
    observation_space = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per-step observations, e.g. {"shape": [11]}; uploads are checked against it.',
    )
    action_space = models.JSONField(
        default=dict,
        blank=True,
        help_text='Actions: {"kind": "box", "shape": [3]} or {"kind": "discrete", "n": 2}; uploads are checked.',
    )
    initial_policies = models.JSONField(
        default=list, blank=True, help_text="Scripted policies for the first clips; empty: random and the preset's."
    )
    segment_steps = models.PositiveIntegerField(default=50, validators=[MinValueValidator(2)])
    render_width = models.PositiveIntegerField(default=320, validators=[MinValueValidator(16)])
    render_height = models.PositiveIntegerField(default=240, validators=[MinValueValidator(16)])
    render_fps = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the environment's fps.")
    feedback_mode = models.CharField(max_length=16, choices=FeedbackMode.choices, default=FeedbackMode.BOTH)
    overlap = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(50)], help_text="Judgments wanted per query."
    )
    lease_ttl_seconds = models.PositiveIntegerField(default=300, validators=[MinValueValidator(10)])
    require_full_view = models.BooleanField(
        default=False, help_text="Annotators must watch both clips to the end before they can answer."
    )
    loop_settings = models.JSONField(default=dict, blank=True)
    gold_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Share of served pairs that are gold questions with a known answer (0 = off).",
    )
    repeat_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Share of answers shown again later, sides reversed, to measure self-consistency (0 = off).",
    )
    qualification_size = models.PositiveIntegerField(
        default=0, help_text="Gold questions a new annotator answers before real work (0 = no qualification)."
    )
    qualification_threshold = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Accuracy on the qualification questions needed to go on.",
    )
    status = models.CharField(max_length=16, choices=ProjectStatus.choices, default=ProjectStatus.ACTIVE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("project-detail", args=[self.slug])

    @property
    def has_pairwise(self) -> bool:
        return self.feedback_mode in (FeedbackMode.PAIRWISE, FeedbackMode.BOTH)

    @property
    def has_ranking(self) -> bool:
        return self.feedback_mode in (FeedbackMode.RANKING, FeedbackMode.BOTH)


class ProjectRole(models.TextChoices):
    RESEARCHER = "researcher", "Researcher"
    ANNOTATOR = "annotator", "Annotator"


class Membership(models.Model):
    """A user's place in a project. Kept in `labeling` so dependencies point one way (labeling → accounts)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=ProjectRole.choices, default=ProjectRole.ANNOTATOR)
    qualified_at = models.DateTimeField(null=True, blank=True)
    # A researcher's flag from the disagreement review: a note for people (shown on the review page and the
    # dashboard's quality section), not a sanction — the annotator keeps getting work until removed.
    flagged_at = models.DateTimeField(null=True, blank=True)
    flagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    flag_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Invite(models.Model):
    """An invitation to join a project with a role, sent as a link.

    The link carries this row's id signed with the site's secret (``labeling.invites``), so it can't be forged or
    guessed and the members page can show it again; whether it still works is this row's business: it expires,
    it is used once, and a researcher may revoke it.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invites")
    role = models.CharField(max_length=16, choices=ProjectRole.choices, default=ProjectRole.ANNOTATOR)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"invite #{self.pk} to {self.project} ({self.role})"

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.used_at is not None:
            return "used"
        if self.expires_at <= timezone.now():
            return "expired"
        return "open"


class AuditAction(models.TextChoices):
    PROJECT_CREATED = "project.created", "Project created"
    MEMBER_ADDED = "member.added", "Member added"
    MEMBER_ROLE_CHANGED = "member.role_changed", "Role changed"
    MEMBER_REMOVED = "member.removed", "Member removed"
    INVITE_CREATED = "invite.created", "Invite created"
    INVITE_ACCEPTED = "invite.accepted", "Invite accepted"
    INVITE_REVOKED = "invite.revoked", "Invite revoked"


class AuditEntry(models.Model):
    """Who did what to a project's membership, and when; written in the same transaction as the change.

    ``target`` keeps the affected user's name (or the object's description) as text, so an entry still reads
    right after that user or object is gone.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="audit_entries")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    target_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"])]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.target} ({self.project.slug})"


class RewardFactor(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="factors")
    key = models.CharField(max_length=64, validators=[FACTOR_KEY_VALIDATOR])
    label = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    unit = models.CharField(max_length=32, blank=True)
    direction = models.SmallIntegerField(choices=[(1, "Higher is better"), (-1, "Lower is better")], default=1)
    sigma = models.FloatField(default=1.0, validators=[MinValueValidator(0.0)], help_text="Margin multiplier.")
    source = models.CharField(max_length=100, help_text="Per-step extractor name, or an info key.")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["project", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="factor_key_unique")]

    def __str__(self) -> str:
        return f"{self.project.slug}:{self.key}"


class Rollout(models.Model):
    """One episode of the environment; the arrays (actions, observations, factors, rewards) live in an .npz."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rollouts")
    policy = models.CharField(max_length=100, help_text='"random", a scripted controller, or a checkpoint.')
    env_seed = models.BigIntegerField()
    n_steps = models.PositiveIntegerField()
    data = models.FileField(upload_to="rollouts/%Y/%m/")
    true_return = models.FloatField(null=True, blank=True)
    iteration = models.PositiveIntegerField(default=0, help_text="0 = the initial pool.")
    # The trainer's run that made it, by id: labeling doesn't know the trainer's models (nor may it import them).
    run = models.PositiveIntegerField(null=True, blank=True, db_index=True, help_text="The run that made it.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "id"]

    def __str__(self) -> str:
        return f"rollout {self.pk} ({self.policy}, seed {self.env_seed})"


class RenderStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RENDERING = "rendering", "Rendering"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    # Data only (an uploaded or imported episode without frames, video or a seed to re-simulate from): never
    # rendered; its factor totals serve HERON rankings, and factors-only pairs (two such clips compared by their
    # factor totals, asked by a program: never a random query, never paired with a clip with video).
    NO_VIDEO = "none", "No video"


class Clip(models.Model):
    """A segment of a rollout; reproducible from the rollout's seed and actions, so video is rendered lazily."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="clips")
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="clips")
    start = models.PositiveIntegerField()
    length = models.PositiveIntegerField()
    factor_totals = models.JSONField(default=dict, help_text="Sum of each factor over the segment, by key.")
    true_return = models.FloatField(null=True, blank=True)
    video = models.FileField(upload_to="clips/%Y/%m/", blank=True)
    poster = models.FileField(upload_to="clips/%Y/%m/", blank=True)
    render_status = models.CharField(max_length=16, choices=RenderStatus.choices, default=RenderStatus.PENDING)
    render_error = models.TextField(blank=True)
    render_started_at = models.DateTimeField(
        null=True, blank=True, help_text="When the current render claim was taken (labeling.clips.clip_render_claim)."
    )
    iteration = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "id"]
        indexes = [models.Index(fields=["project", "iteration"])]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "start"], name="clip_segment_unique"),
        ]

    def __str__(self) -> str:
        return f"clip {self.pk}"

    @property
    def video_url(self) -> str | None:
        return reverse("clip-media", args=[self.pk, "video"]) if self.video else None

    @property
    def poster_url(self) -> str | None:
        return reverse("clip-media", args=[self.pk, "poster"]) if self.poster else None


class QuerySource(models.TextChoices):
    RANDOM = "random", "Random"
    ACTIVE = "active", "Active"
    GOLD = "gold", "Gold"
    REPEAT = "repeat", "Repeat"


class QueryStatus(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETE = "complete", "Complete"
    RETIRED = "retired", "Retired"


def _random_key() -> float:
    import random

    return random.random()


class Query(models.Model):
    """A pair of clips to judge, stored in canonical order (clip_a.id < clip_b.id)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queries")
    clip_a = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="+")
    clip_b = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=16, choices=QuerySource.choices, default=QuerySource.RANDOM)
    priority = models.IntegerField(default=0, help_text="Higher is served first.")
    uncertainty = models.FloatField(null=True, blank=True)
    answers_wanted = models.PositiveIntegerField(default=1)
    answers_given = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=QueryStatus.choices, default=QueryStatus.OPEN)
    random_key = models.FloatField(default=_random_key)
    iteration = models.PositiveIntegerField(default=0)
    gold_answer = models.CharField(
        max_length=8,
        blank=True,
        choices=[("a", "clip A is better"), ("b", "clip B is better"), ("equal", "equal")],
        help_text="The known answer of a gold question, in canonical terms.",
    )
    repeat_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="repeats",
        help_text="For a repeat: the query whose pair it shows again, sides reversed.",
    )
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="A repeat is asked of one annotator only.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "queries"
        ordering = ["project", "-priority", "random_key"]
        indexes = [
            # The assignment engine's scan: open queries of a project in serving order.
            models.Index(
                fields=["project", "-priority", "random_key"],
                name="query_serving_order",
                condition=Q(status="open"),
            ),
            # The admin's list, newest first within a project (and cheap counts of a project's queries).
            models.Index(fields=["project", "-id"], name="query_project_newest"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(clip_a__lt=F("clip_b")), name="query_canonical_order"),
            models.CheckConstraint(condition=Q(answers_given__lte=F("answers_wanted")), name="query_not_overfull"),
            models.UniqueConstraint(
                fields=["clip_a", "clip_b"],
                condition=Q(source__in=["random", "active"]),
                name="query_pair_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"query {self.pk} ({self.clip_a_id} vs {self.clip_b_id})"

    def shown_clips(self, swapped: bool) -> tuple[Clip, Clip]:
        """(left, right) clips as shown with ``swapped``."""
        return displayed_pair(self.clip_a, self.clip_b, swapped)


class Lease(models.Model):
    """An annotator's claim on a query while they look at it. Live while ``expires_at`` is in the future."""

    query = models.ForeignKey(Query, on_delete=models.CASCADE, related_name="leases")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases")
    token = models.UUIDField(default=uuid.uuid4, unique=True)
    swapped = models.BooleanField(default=False, help_text="Clip B was shown on the left.")
    skipped = models.BooleanField(
        default=False, help_text="The annotator skipped this pair; it is not offered to them again."
    )
    created_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["query", "annotator"], name="lease_one_per_annotator")]
        indexes = [models.Index(fields=["expires_at"])]

    def __str__(self) -> str:
        return f"lease {self.token} on {self.query_id}"

    @property
    def is_live(self) -> bool:
        return self.expires_at > timezone.now()

    def shown_clips(self) -> tuple[Clip, Clip]:
        """(left, right) clips as this lease shows them."""
        return self.query.shown_clips(self.swapped)

    def extend(self, ttl_seconds: int) -> None:
        now = timezone.now()
        self.heartbeat_at = now
        self.expires_at = now + timedelta(seconds=ttl_seconds)
        self.save(update_fields=["heartbeat_at", "expires_at"])


class Choice(models.TextChoices):
    LEFT = "left", "Left is better"
    RIGHT = "right", "Right is better"
    EQUAL = "equal", "Equally good"
    CANT_TELL = "cant_tell", "Can't tell"


class Judgment(models.Model):
    """One annotator's answer to a query. ``choice`` is as shown on screen; ``swapped`` maps it to clips."""

    query = models.ForeignKey(Query, on_delete=models.CASCADE, related_name="judgments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments")
    choice = models.CharField(max_length=16, choices=Choice.choices)
    swapped = models.BooleanField(default=False)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    client_id = models.UUIDField()
    created_at = models.DateTimeField(default=timezone.now)
    # Marked wrong by a researcher (disagreement review): left out of preference sets and training-label
    # exports, kept here and in the raw judgments export, with who and why.
    excluded_at = models.DateTimeField(null=True, blank=True)
    excluded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    exclusion_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["query", "annotator"], name="judgment_one_per_annotator"),
            models.UniqueConstraint(fields=["annotator", "client_id"], name="judgment_client_id_unique"),
        ]
        # An annotator's history page: their newest answers first, an index range instead of sorting all of them.
        indexes = [models.Index(fields=["annotator", "-created_at", "-id"], name="judgment_annotator_newest")]

    def __str__(self) -> str:
        return f"{self.annotator} on {self.query_id}: {self.choice}"

    def shown_clips(self) -> tuple[Clip, Clip]:
        """(left, right) clips as they were shown when this answer was given."""
        return self.query.shown_clips(self.swapped)

    @property
    def preferred_clip_id(self) -> int | None:
        """The clip judged better, in canonical terms; None for equal or can't tell."""
        if self.choice not in (Choice.LEFT, Choice.RIGHT):
            return None
        left, right = displayed_pair(self.query.clip_a_id, self.query.clip_b_id, self.swapped)
        return left if self.choice == Choice.LEFT else right

    @property
    def canonical_label(self) -> str | None:
        """ "a", "b" or "equal" in canonical clip order; None for can't tell (compared with gold answers)."""
        if self.choice == Choice.EQUAL:
            return "equal"
        preferred = self.preferred_clip_id
        if preferred is None:
            return None
        return "a" if preferred == self.query.clip_a_id else "b"

    @property
    def target_a(self) -> float | None:
        """P(clip_a better than clip_b) that this judgment expresses; None when it says nothing."""
        if self.choice == Choice.EQUAL:
            return 0.5
        preferred = self.preferred_clip_id
        if preferred is None:
            return None
        return 1.0 if preferred == self.query.clip_a_id else 0.0


class FactorRanking(models.Model):
    """An annotator's ordering of the project's reward factors; their latest one is current, older ones are kept.

    ``groups`` lists factor keys level by level, most important first; a level of several keys is a tie group.
    ``sigmas`` holds per-factor margin multipliers that differ from the factor's default.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rankings")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings")
    groups = models.JSONField()
    sigmas = models.JSONField(default=dict, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "annotator", "-created_at"])]

    def __str__(self) -> str:
        return " > ".join(" = ".join(group) for group in self.groups)


class JudgmentRevision(models.Model):
    """A change an annotator made to an earlier answer; the judgment holds the latest choice, this the history."""

    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="revisions")
    previous_choice = models.CharField(max_length=16, choices=Choice.choices)
    new_choice = models.CharField(max_length=16, choices=Choice.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["judgment", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.judgment_id}: {self.previous_choice} → {self.new_choice}"


# --- Webhooks (labeling.webhooks sends them; the event types are in labeling.events) ------------------------------


class WebhookEndpoint(models.Model):
    """A researcher's HTTP(S) endpoint that receives a project's events, signed per the Standard Webhooks spec."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list, help_text="Event types this endpoint receives (labeling.events).")
    is_active = models.BooleanField(default=True)
    # "whsec_" + base64 of 32 random bytes; returned once, when the endpoint is created.
    secret = models.CharField(max_length=100, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # Batching of "judgments.recorded": judgments with ids above this have not been announced yet; a batch is
    # due (a flush task is on its way) while judgments_due_at is set.
    judgments_sent_through = models.BigIntegerField(default=0, editable=False)
    judgments_due_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["project", "id"]

    def __str__(self) -> str:
        return f"{self.project.slug}: {self.url}"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RETRYING = "retrying", "Retrying"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One message to one endpoint, with its attempts (the delivery log)."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    msg_id = models.CharField(max_length=64, unique=True)  # the webhook-id header, the same on every attempt
    event = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=WebhookDeliveryStatus.choices, default="pending")
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # Every attempt: {"attempt", "at", "response_code", "error", "duration_ms"}.
    attempt_log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["endpoint", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} ({self.status})"


class ExportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ExportJob(models.Model):
    """An export written to storage by a worker, for projects too large to stream in one request.

    Not a trainer run: an export only reads, so it must not wait in the project's one lane behind a training
    run (nor hold that lane), and labeling, which owns the rows it reads, may not import the trainer.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="export_jobs")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    what = models.CharField(max_length=16)  # judgments, clips or rankings (labeling.export_jobs.SOURCES)
    format = models.CharField(max_length=8)  # labeling.exports.FORMATS
    status = models.CharField(max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    rows = models.PositiveBigIntegerField(default=0, help_text="Rows written so far.")
    total_rows = models.PositiveBigIntegerField(null=True, blank=True, help_text="Rows expected (counted at start).")
    file = models.FileField(upload_to="exports/%Y/%m/", blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    # Written at the claim and with every progress report: a running job silent for RUN_STALE_SECONDS has lost
    # its worker (labeling.export_jobs.export_jobs_expire).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.what}.{self.format}, {self.status})"

    @property
    def progress(self) -> float:
        if self.status == ExportStatus.DONE:
            return 1.0
        if not self.total_rows:
            return 0.0
        return min(0.99, self.rows / self.total_rows)
