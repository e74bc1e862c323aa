"""Feature labels that need no language model, each scored on held-out examples it was not built from.

Everything comes from an analysis artifact (`interp analyze`); the model is never run.

The split. A sequence (context window) is *held out* when `hash_keys(sequence index)` is odd. Held-out
data: the top and interval examples from held-out sequences and the held-out windows of the random
sample. A label is built from everything else: the build examples, the build random windows, and the
token-mass table with every held-out token position we can see subtracted (those positions are
exactly the ones scored; token frequencies stay corpus-wide, as they say nothing about a feature).

A label is a *rule*: a function of a token's context (the L = window_left tokens before it, the token,
the next token) giving a predicted activation. Candidate rules, each built from build data:
- tokens:  the smallest set of tokens holding `coverage` of the build activation mass, each weighted
           by its mean activation per occurrence ("fires on ` def`, ` class`");
- n-gram:  the tokens above, or any token, preceded at the peak by a fixed token at offset -1 or -2
           in most build top examples ("` import` after `from` …");
- class:   a character class of the token: digits, whitespace, punctuation, non-ASCII, capitalised;
- next:    the actual next token is one the feature's logit effects promote most ("before ` (`");
- context: for context-wide features (active on a large share of the tokens of their sequences),
           tokens enriched in the preceding window ("in context with `class`").
The rule with the best detection AUROC on build data is the label. Descriptive facts ride along:
what it predicts (agreement of actual next tokens with the logit effects, against the base rate),
the character class, the context-wide share.

The score: the chosen rule as a predictor, on held-out data only. Detection AUROC: positives are the
held-out example peaks and the held-out random tokens where the feature fires, negatives the held-out
random tokens where it does not; ties count one half. Correlation: Pearson's r between the rule's
prediction and the activation over the held-out peaks and random tokens.

Modules: rules (scores, rules, character classes), evidence (the analysis as arrays, split into
build and held-out evidence), labeller (a label per feature), files (labels.json, its one reader
and writer), llm (explanations by a chat-completions endpoint).

`labels.json` beside the analysis (the neurons' labels in `neurons/labels.json`):
  {"format": "monosemantic-labels", "format_version": 1, "config": {...},
   "features": [{"id", "label", "score", "correlation", "rule": {...}, "build_auroc", "facts": {...},
                 "held_out": {"positives", "negatives"}}, ...]}
"""
