"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with
JumpReLU Sparse Autoencoders").

pre = (x - b_dec) @ W_enc + b_enc; f = pre * H(pre - theta); x_hat = f @ W_dec + b_dec, with a
per-latent threshold theta = exp(log_threshold) (log parameterisation keeps theta > 0).

The step H has no useful gradient in theta, so training uses straight-through estimators with a
rectangle kernel K(u) = 1{|u| < 1/2} of width `bandwidth` (eps):
  d/dtheta [pre * H(pre - theta)] := -(theta / eps) K((pre - theta) / eps)
  d/dtheta H(pre - theta)          := -(1 / eps) K((pre - theta) / eps)
while d/dpre is H(pre - theta) for the JumpReLU and 0 for the step.

Loss = mse + l0_coefficient * l0, l0 = E_tokens sum_i H(pre_i - theta_i); or, with `l0_target`
set, mse + l0_coefficient * (l0 / l0_target - 1)^2 (the sparsity term `l0_target` is reported).
Decoder rows are kept unit norm.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sae.architectures.base import SAE, TrainState, TrainStep
from sae.config import JumpReLUConfig


def rectangle(u: Tensor) -> Tensor:
    """K(u) = 1 where |u| < 1/2, else 0."""
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth: float):  # type: ignore[override]
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold).to(grad.dtype)
        grad_threshold = (-(threshold / eps) * rectangle((pre - threshold) / eps) * grad).sum(0)
        return grad_pre, grad_threshold, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth: float):  # type: ignore[override]
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = (-(1.0 / eps) * rectangle((pre - threshold) / eps) * grad).sum(0)
        return torch.zeros_like(pre), grad_threshold, None


def jumprelu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """pre * H(pre - threshold); pre [n, d_sae], threshold [d_sae]; straight-through theta gradient."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """H(pre - threshold) [n, d_sae]; straight-through theta gradient, none into pre."""
    return _Step.apply(pre, threshold, bandwidth)


class JumpReLUSAE(SAE):
    arch = "jumprelu"
    config_class = JumpReLUConfig
    unit_norm_decoder = True
    cfg: JumpReLUConfig

    def __init__(self, cfg: JumpReLUConfig):
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(cfg.initial_threshold)))

    @property
    def threshold(self) -> Tensor:
        """theta = exp(log_threshold), [d_sae]."""
        return self.log_threshold.exp()

    def preacts(self, x: Tensor) -> Tensor:
        return self.encoder_input(x) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        pre = self.preacts(x)
        return pre * (pre > self.threshold).to(pre.dtype)

    def train_step(self, x: Tensor, state: TrainState) -> TrainStep:
        cfg = self.cfg
        pre = self.preacts(x)
        threshold = self.threshold
        f = jumprelu(pre, threshold, cfg.bandwidth)
        x_hat = self.decode(f)
        mse = (x - x_hat).pow(2).sum(-1).mean()
        l0 = step(pre, threshold, cfg.bandwidth).sum(-1).mean()
        if cfg.l0_target is None:
            sparsity_name, sparsity = "l0", l0
        else:
            sparsity_name, sparsity = "l0_target", (l0 / cfg.l0_target - 1).pow(2)
        active = f.detach() > 0
        return TrainStep(
            total=mse + cfg.l0_coefficient * sparsity,
            terms={"mse": mse, sparsity_name: sparsity},
            x_hat=x_hat,
            fired=active.sum(0),
            l0=active.sum(-1).to(x.dtype).mean(),
        )

    def file_tensors(self) -> dict[str, Tensor]:
        """SAELens JumpReLU names: the threshold itself, not its log."""
        tensors = {name: t.detach() for name, t in self.state_dict().items() if name != "log_threshold"}
        tensors["threshold"] = self.threshold.detach()
        return tensors

    def load_file_tensors(self, tensors: dict[str, Tensor]) -> None:
        """threshold -> log_threshold (logarithm taken in float64); thresholds must be >= 0."""
        tensors = dict(tensors)
        threshold = tensors.pop("threshold")
        if (threshold < 0).any():
            bad = int((threshold < 0).sum())
            raise ValueError(
                f"JumpReLU threshold has {bad} negative value(s); this SAE parameterises theta = exp(log_threshold) "
                "and needs every threshold >= 0"
            )
        tensors["log_threshold"] = log_reproducing(threshold)
        self.load_state_dict(tensors, strict=True)


def log_reproducing(threshold: Tensor, search_ulps: int = 4) -> Tensor:
    """The log of each threshold, chosen among the floats within `search_ulps` of it so that exp
    gives the threshold back as closely as the dtype allows: exactly for any threshold that was
    itself computed as exp(log_threshold), which makes save/load round trips bit-exact."""
    nearest = threshold.double().log().to(threshold.dtype)
    candidates = [nearest]
    for direction in (float("inf"), float("-inf")):
        step = nearest
        for _ in range(search_ulps):
            step = torch.nextafter(step, torch.full_like(step, direction))
            candidates.append(step)
    stacked = torch.stack(candidates)  # [2 * search_ulps + 1, d_sae]
    error = (stacked.exp() - threshold).abs()
    error = torch.where(torch.isnan(error), torch.full_like(error, float("inf")), error)
    return stacked.gather(0, error.argmin(0, keepdim=True)).squeeze(0)
