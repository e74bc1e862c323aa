"""The scorecard (`interp scorecard`): SAE features against the model's neurons on concepts with exact
ground truth, beside a random-init control, with universality, feature splitting and logit
consistency. `concepts` holds the ground truth, `measures` the statistics, `score` the concept rows,
`splitting` the width families, `units` the activation pass and `run` the command.

The record's file and format live here, so that the report can read it without model code."""

FORMAT = "monosemantic-scorecard"
FORMAT_VERSION = 1
SCORECARD_FILE = "scorecard.json"
