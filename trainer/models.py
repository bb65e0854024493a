"""Training artefacts: immutable preference sets and versioned reward models, each linked to what made it."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from labeling.models import Job, Project


class PreferenceSet(models.Model):
    """An immutable training-set snapshot: a Parquet file of pairs (clip_a, clip_b, target, weight, origin, level,
    annotator)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="preference_sets")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
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
