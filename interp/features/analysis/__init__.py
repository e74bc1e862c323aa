"""Feature analysis: one streaming pass over held-out tokens gives every statistic a feature page,
a label or a search needs, saved as an artifact that never needs the model again.

The pass (`FeatureStatistics.update`, once per batch of token windows [B, T]) sees the batch's
dense feature activations f [B, T, F] and updates all F features at once with vectorised ops;
nothing of size [tokens, F] outlives the batch. A feature *fires* on a token when f > 0 (negative
values, e.g. of raw neurons, count as not firing). Tokens that are ignored (BOS by default, and any
chosen token ids) are zeroed before anything is counted and are not in the token count.

Per feature, accumulated over the pass:
- fire count, density (fire count / analysed tokens), mean activation over firings, max;
- a histogram over log-spaced bins shared by all features: bin 0 holds (0, 2^lo), bin b in
  1..n holds [2^(lo + (b-1)/bpo), 2^(lo + b/bpo)), bin n+1 holds [2^hi, inf);
- top examples: the K sequences with the largest per-sequence maximum (one example per sequence),
  each with a token window [max position - left, max position + right] and the feature's
  activation on every token of it; merged per batch by torch.topk over [kept ∪ new];
- interval samples: intervals are octaves [2^c, 2^(c+1)) at and below the octave of the feature's
  running max (interval i is octave top - i). Each keeps the S firings with the smallest hash key
  of (token index, feature): an exact uniform-by-hash sample of all firings in that octave (an
  octave becomes tracked before or at its first firing and is dropped only when the max has
  moved I octaves above it). Each interval's firing count gives its share of all firings;
- activation mass and firing count by token id (`PairTotals`, exact while the table fits);
- co-firing counts of feature pairs active on the same token (among each token's strongest
  `cofire_max_active` features), kept as the top features per feature by Jaccard index;
- the number of sequences it fired in, and the share of each top example's sequence it fired on.

From the decoder alone (`decoder_statistics`): nearest features by decoder cosine; logit effects,
the decoder direction taken to the residual stream (through W_out for `mlp.hook_post`), through the
final norm's weight (centred first for LayerNorm) and W_U, with top promoted/suppressed tokens and
a histogram; for SAEs on MLP neurons, the neurons each feature writes to (largest |W_dec|).

Modules: config (AnalysisConfig), tables (hashing, ranking, best-per-group and pair tables),
statistics (the streaming pass), decoder (decoder-only statistics and logit effects), neuron_pass
(the raw MLP neurons as a second dictionary), artifact (the folder on disk and its schema), run
(the pass over a model).

Artifact folder (`Analysis.save` / `Analysis.load`):
  analysis.json           format, version, model, hook, SAE, corpus, options, counts, flags
  features.safetensors    every per-feature tensor (see `Analysis.feature` for their meaning)
  vocab.json              {"token_strings": [...]} one readable string per token id
  training.json, training_tensors.safetensors   the model's training record, when it has one
"""
