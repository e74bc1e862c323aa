"""The activations room: hook names and capture, activation datasets written to disk, activations streamed
into SAE training, and the model with its SAE opened for a step. Imports the model room only."""
