"""One SAE of a sweep: its weights, optimizer, dead-latent counters, and one optimizer step."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from sae.architectures import SAE, TrainState, get_architecture
from sae.config import SAEConfig, TrainConfig
from sae.distributed import SINGLE_PROCESS, Ranks
from sae.hardware import fast_adam, resolve_selection_dtype
from sae.schedule import default_lr, lr_factor


class SweepMember:
    """One SAE with its optimizer, dead-latent counters and the index of the source it trains on."""

    def __init__(
        self,
        name: str,
        arch: str,
        sae_cfg: SAEConfig,
        cfg: TrainConfig,
        device: torch.device,
        source: int = 0,
        *,
        dead_window: int,
        distributed: bool = False,
    ):
        """dead_window: tokens without a firing after which a latent counts as dead (TrainConfig.dead_window);
        distributed: one of several data-parallel processes (its selection dtype follows)."""
        self.name, self.arch, self.source, self.dead_window = name, arch, source, dead_window
        with torch.random.fork_rng(devices=[]):  # every member starts as a lone run with this seed would
            torch.manual_seed(cfg.seed)
            self.sae: SAE = get_architecture(arch)(sae_cfg)
        self.sae.to(device=device, dtype=getattr(torch, cfg.dtype))
        self.base_lr = cfg.lr if cfg.lr is not None else default_lr(sae_cfg.d_sae, sae_cfg.d_in)
        self.params = [p for p in self.sae.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            self.params, lr=self.base_lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, **fast_adam(device)
        )
        self.tokens_since_fired = torch.zeros(sae_cfg.d_sae, dtype=torch.int64, device=device)
        # float16 gradients underflow without loss scaling; bfloat16 and float32 need none
        self.scaler = torch.amp.GradScaler(device.type) if cfg.autocast == "float16" else None
        self.selection_dtype = resolve_selection_dtype(cfg, device, distributed=distributed)
        if cfg.resample_steps and type(self.sae).resample_dead is SAE.resample_dead:
            raise ValueError(
                f"resample_steps is set but architecture {arch!r} does not resample dead latents; "
                "clear resample_steps or use an architecture that resamples (relu)"
            )

    def dead_mask(self) -> Tensor:
        """[d_sae] bool: latents that have not fired in the last dead_window tokens."""
        return self.tokens_since_fired >= self.dead_window

    def step(
        self,
        x: Tensor,
        step: int,
        cfg: TrainConfig,
        total_steps: int,
        autocast: torch.autocast | None,
        ranks: Ranks = SINGLE_PROCESS,
    ) -> dict[str, Any]:
        """One optimizer step on this rank's x [n, d_in] (all ranks together: the global batch);
        returns the step's detached outputs for logging."""
        lr = self.base_lr * lr_factor(step, cfg, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        state = TrainState(
            step=step,
            total_steps=total_steps,
            dead_mask=self.dead_mask(),
            selection_dtype=self.selection_dtype,
        )
        with autocast if autocast is not None else nullcontext():
            out = self.sae.train_step(x, state)
        fired, loss = out.fired, out.total.detach()
        if ranks.distributed:  # one all-reduce: fired counts (exact in float64) and the loss
            summed = ranks.sum_(torch.cat([fired.double(), loss.double().reshape(1)]))
            fired, loss = summed[:-1], summed[-1] / ranks.world_size
        if not torch.isfinite(loss):
            raise ValueError(
                f"the loss of SAE {self.name or self.arch!r} became {loss.item()} at step {step}; "
                "lower the learning rate (--lr) or set --grad-clip-norm"
            )
        (self.scaler.scale(out.total) if self.scaler is not None else out.total).backward()
        ranks.average_gradients(self.params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        self.sae.after_backward()
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip_norm, foreach=True)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when a gradient is Inf/NaN (the scale then shrinks)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.sae.after_step()
        ranks.average_buffers_(self.sae)
        self.optimizer.zero_grad(set_to_none=True)
        self.tokens_since_fired += x.shape[0] * ranks.world_size
        self.tokens_since_fired.masked_fill_(fired > 0, 0)
        resampled = None
        if step + 1 in cfg.resample_steps:
            dead = self.dead_mask()
            # every rank resamples from the same global batch with the same RNG state: same result
            resampled = self.sae.resample_dead(dead, ranks.gather_rows(x), self.optimizer)  # type: ignore[attr-defined]
            self.tokens_since_fired.masked_fill_(dead, 0)
        return {"out": out, "lr": lr, "resampled": resampled}

    def metrics(self, x: Tensor, result: dict[str, Any], ranks: Ranks = SINGLE_PROCESS) -> dict[str, Any]:
        """Loss terms, L0, FVU (sum (x - x_hat)^2 / sum (x - mean x)^2) of the global batch, and the dead
        fraction: latents with no firing in the last dead_window tokens (stated as dead_window_tokens).

        Every rank must call it (it all-reduces). Per-rank sums combine exactly:
        sum (x - mean)^2 = sum_r [sum (x - mean_r)^2 + n_r mean_r^2] - n mean^2 (per dimension)."""
        out = result["out"]
        with torch.no_grad():
            x64, x_hat64 = x.double(), out.x_hat.detach().double()
            local_mean = x64.mean(0)
            means = torch.stack(
                [
                    out.total.detach().double(),
                    *(v.detach().double() for v in out.terms.values()),
                    out.l0.detach().double(),
                ]
            )
            n = x.shape[0] * ranks.world_size
            sums = ranks.sum_(
                torch.cat(
                    [
                        means / ranks.world_size,
                        (x64 - x_hat64).pow(2).sum().reshape(1),
                        (x64 - local_mean).pow(2).sum(0),
                        x.shape[0] * local_mean.pow(2),
                        x64.sum(0),
                    ]
                )
            )
            k, d = len(means), x.shape[1]
            means, error = sums[:k].tolist(), sums[k]
            centred, between, total = sums[k + 1 : k + 1 + d], sums[k + 1 + d : k + 1 + 2 * d], sums[k + 1 + 2 * d :]
            variance = (centred + between - n * (total / n).pow(2)).sum()
        return {
            "sae": self.name,
            "lr": result["lr"],
            "loss": means[0],
            "terms": dict(zip(out.terms, means[1:-1])),
            "l0": means[-1],
            "fvu": (error / variance).item(),
            "dead_fraction": self.dead_mask().double().mean().item(),
            "dead_window_tokens": self.dead_window,
        }
