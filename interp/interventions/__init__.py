"""The interventions room: one splice of a dictionary into the model, and what is measured through it
(evaluation, feature edits, ablation effects). Imports the model and activations rooms."""
