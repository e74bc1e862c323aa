"""The scorecard (`interp scorecard`): SAE features against the model's neurons on concepts with exact
ground truth, beside trivial baselines and a random-init control, every figure with a document-bootstrap
interval. `concepts` holds the ground truth, `tokens` the windows, masks and folds, `measures` the
statistics, `crossfit` the detectors chosen on some documents and scored on others, `intervals` the
bootstrap, `verdicts` the tables, `purity` the per-unit measures, `absorption` the hierarchy test,
`splitting` the width families, `units` the activation pass and `run` the command.

The record's file and format live here, so that the report can read it without model code."""

FORMAT = "monosemantic-scorecard"
FORMAT_VERSION = 2
SCORECARD_FILE = "scorecard.json"
