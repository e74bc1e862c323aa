"""Everything that needs a model or text: corpora, tokenizer, models, hook capture,
splicing an SAE into the model, feature analysis, labels, neurons, search and reports."""
