"""Events labeling announces; the trainer app listens (labeling never imports trainer)."""

from django.dispatch import Signal

# Sent after the transaction that stored a new factor ranking has committed; kwargs: ranking.
ranking_submitted = Signal()

# Sent after the transaction that stored a new pairwise judgment has committed; kwargs: judgment.
judgment_recorded = Signal()

# The events below are sent by the trainer (labeling never imports it) through labeling's signals, after the
# transaction that made them has committed. labeling.webhooks turns each into webhook deliveries.

# A run (trainer.models.Run) moved from one state to another; kwargs: project_id, run_id, kind, state, previous.
run_state_changed = Signal()

# A reward model finished training and is ready; kwargs: project_id, reward_model_id, version.
reward_model_ready = Signal()

# A run that waited for its label budget may start: the budget is met; kwargs: project_id, run_id, labels.
label_budget_reached = Signal()

# An export file is ready to be fetched; kwargs: project_id, export (a JSON-able dict: kind, id, url, ...).
export_ready = Signal()
