"""A tiny model with an SAE on its first MLP, opened as `interp serve` and the intervention API open
one (a ModelAndSAE), for the intervention, server and live-panel tests."""

from __future__ import annotations

from pathlib import Path

import torch

from interp.activations.sources import ModelAndSAE
from interp.model.transformer import LoadedModel

HOOK = "blocks.0.mlp.hook_post"
D_MLP, D_SAE, N_CTX = 64, 96, 32
DOCUMENTS = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(300)]


def tiny_opened(n_layers: int = 2, context_length: int = N_CTX) -> ModelAndSAE:
    """A random 2-layer model (so that an edit at one position reaches later ones through attention)
    and a random TopK SAE at blocks.0.mlp.hook_post."""
    import transformer_lens.model_bridge.sources.native  # noqa: F401
    from transformer_lens.model_bridge.bridge import TransformerBridge

    from interp.model.tokenizer import train_tokenizer
    from sae.architectures import build_sae

    tokenizer = train_tokenizer(DOCUMENTS, vocab_size=300, show_progress=False)
    bridge = TransformerBridge.boot_native(
        dict(
            d_model=32,
            d_head=8,
            n_layers=n_layers,
            n_ctx=context_length,
            n_heads=4,
            d_vocab=300,
            d_mlp=D_MLP,
            act_fn="gelu",
            seed=0,
            normalization_type="LN",
        )
    )
    model = LoadedModel(bridge=bridge.eval(), tokenizer=tokenizer, name="tiny", context_length=context_length)
    torch.manual_seed(0)
    sae = build_sae("topk", d_in=D_MLP, d_sae=D_SAE, k=6)
    with torch.no_grad():  # decoder rows large enough that a clamp moves the model
        sae.W_dec.mul_(4.0)
    return ModelAndSAE(model=model, model_spec="tiny", sae=sae, sae_path=Path("tiny-sae"), hook=HOOK)
