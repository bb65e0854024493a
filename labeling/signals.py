"""Events labeling announces; the trainer app listens (labeling never imports trainer)."""

from django.dispatch import Signal

# Sent after the transaction that stored a new factor ranking has committed; kwargs: ranking.
ranking_submitted = Signal()

# Sent after the transaction that stored a new pairwise judgment has committed; kwargs: judgment.
judgment_recorded = Signal()
