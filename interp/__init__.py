"""Everything that needs a model or text, in five rooms, each importing only the rooms below it:
model (corpora, tokenizer, transformer, training) < activations (hooks, capture, streaming) <
interventions (the splice, evaluation, feature edits) < features (analysis, labels, neurons, search,
scorecard) < app (command line, demo, report, server, Neuronpedia export)."""
