"""Users and their global role.

A user's *global* role says what they may do on the platform (researchers create projects and use the admin;
annotators label). What they may do *in a project* is their project membership (labeling.Membership).
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class Role(models.TextChoices):
    RESEARCHER = "researcher", "Researcher"
    ANNOTATOR = "annotator", "Annotator"


class User(AbstractUser):
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)

    @property
    def is_researcher(self) -> bool:
        return self.role == Role.RESEARCHER or self.is_superuser


class ApiToken(models.Model):
    """A named API token a user made for a program: stored as the SHA-256 of its secret, shown once.

    ``project_id`` limits the token to one project (an id, not a foreign key: accounts names no labeling model;
    labeling's project lookups check it). ``read_only`` allows only GET, HEAD and OPTIONS.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The secret's first characters, to recognise it by.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    project_id = models.BigIntegerField(null=True, blank=True, help_text="Only this project's routes; empty: all.")
    read_only = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["user", "revoked_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
