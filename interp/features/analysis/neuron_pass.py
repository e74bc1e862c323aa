"""The raw MLP neurons as a second dictionary of the analysis pass: the same statistics as for the
SAE's features, plus, for each neuron's top examples, the features contributing most at the peak
token (`peak_driver_ids` / `peak_driver_values` [N, top_k, PEAK_DRIVERS]), which groups the
examples by the responsible feature. Saved as the analysis's `neurons/` sub-artifact."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from interp.features.analysis.artifact import Analysis
from interp.features.analysis.config import AnalysisConfig
from interp.features.analysis.decoder import LogitMap, decoder_statistics
from interp.features.analysis.statistics import FeatureStatistics

PEAK_DRIVERS = 4  # features recorded per top example of a neuron


class NeuronPass:
    """The neurons' side of the analysis pass.

    W_dec [F, N]: the SAE's decoder (N = d_mlp); the other arguments as for `FeatureStatistics`.
    `update(x [B, T, N], f [B, T, F], tokens [B, T])` once per batch."""

    def __init__(
        self,
        W_dec: Tensor,
        vocab_size: int,
        context_length: int,
        cfg: AnalysisConfig,
        *,
        ignored_ids: Iterable[int] = (),
        expected_sequences: int = 1,
    ):
        self.W_dec = W_dec.detach()
        F, N = self.W_dec.shape
        self.cfg = dataclasses.replace(
            cfg, cofire_max_active=0
        )  # neurons are dense: no co-firing counts (the costliest part)
        self.stats = FeatureStatistics(
            N, vocab_size, context_length, self.cfg, ignored_ids=ignored_ids, expected_sequences=expected_sequences
        )
        m = min(PEAK_DRIVERS, F)
        self.driver_ids = torch.full((N, self.cfg.top_k, m), -1, dtype=torch.int32)
        self.driver_values = torch.zeros((N, self.cfg.top_k, m), dtype=torch.float32)

    @torch.no_grad()
    def update(self, x: Tensor, f: Tensor, tokens: Tensor, chunk: int = 512) -> None:
        first = self.stats.sequences_seen
        top = self.stats.top.fields
        old_seq = top["seq"].clone()
        self.stats.update(x, tokens)
        seq, pos = top["seq"], top["pos"]  # [N, K]: kept examples re-ordered, some replaced
        # examples kept from earlier batches carry their drivers to their new slot (one example per sequence)
        same = (seq[:, :, None] == old_seq[:, None, :]) & (seq[:, :, None] >= 0)
        carried, source = same.any(2), same.int().argmax(2)
        m = self.driver_ids.shape[2]
        ids = self.driver_ids.gather(1, source[..., None].expand(-1, -1, m))
        values = self.driver_values.gather(1, source[..., None].expand(-1, -1, m))
        ids[~carried], values[~carried] = -1, 0.0
        # examples from this batch: the features contributing most to the neuron at the peak
        neuron, slot = torch.nonzero(seq >= first, as_tuple=True)
        for start in range(0, len(neuron), chunk):
            j, k = neuron[start : start + chunk], slot[start : start + chunk]
            b, p = (seq[j, k] - first).to(f.device), pos[j, k].to(f.device)
            contribution = f[b, p].float().clamp_min(0) * self.W_dec[:, j.to(f.device)].T.float()  # [c, F]
            best = contribution.topk(m, dim=1)
            positive = best.values > 0
            ids[j, k] = torch.where(positive, best.indices, -1).to(torch.int32).cpu()
            values[j, k] = torch.where(positive, best.values, 0.0).cpu()
        self.driver_ids, self.driver_values = ids, values

    def analysis(self, feature_meta: dict[str, Any], token_strings: list[str], logits: LogitMap | None) -> Analysis:
        """The neurons as an analysis artifact of their own (`d_sae` = N); `feature_meta` is the SAE's analysis.json."""
        N = self.W_dec.shape[1]
        tensors = self.stats.result()
        effects = decoder_statistics(
            torch.eye(N), logits, self.cfg, neurons=False
        )  # a neuron's direction is its unit vector
        tensors.update({k: v for k, v in effects.items() if k.startswith("logit_")})
        tensors["peak_driver_ids"], tensors["peak_driver_values"] = self.driver_ids, self.driver_values
        meta = copy.deepcopy(feature_meta)
        meta.update(
            {
                "dictionary": "neurons",
                "features_sae": feature_meta.get("sae"),
                "sae": {"d_in": N, "d_sae": N, "architecture": "neurons", "config": None},
                "config": dataclasses.asdict(self.cfg),
                "neurons_written": False,
                **self.stats.flags(),
            }
        )
        return Analysis(meta=meta, tensors=tensors, token_strings=token_strings)
