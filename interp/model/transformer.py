"""Models behind one loader: ours (a small TransformerLens-native transformer), a local Hugging
Face checkpoint folder, or a Hugging Face model name — each returned as a TransformerBridge with
hooks (`blocks.0.mlp.hook_post`, `blocks.0.hook_resid_post`, ...) and its tokenizer.

Our model folder:
  config.json        {"format": "monosemantic-native-model", "format_version": 1, "model": ModelConfig,
                      "tokenizer_file": "tokenizer.json", "bos_id": int, "training": {...}}
  model.safetensors  the NativeModel's state dict (tok_embed.weight [d_vocab, d_model], pos.weight,
                      layers.{i}.attn.{q,k,v,o}.{weight,bias}, layers.{i}.mlp.fc_in.weight [d_mlp, d_model], ...)
  tokenizer.json     interp.model.tokenizer.Tokenizer
  training.json, training_tensors.safetensors   the training record (interp.model.record), optional

transformer_lens is imported inside functions: it takes seconds, and `interp --help` should not.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from interp.model.compat import bridge_from_module
from interp.model.config import ModelConfig
from interp.model.tokenizer import TOKENIZER_FILE, Tokenizer
from sae.distributed import resolve_device
from sae.files import inside, read_json, read_safetensors, write_json, write_safetensors
from sae.schema import from_dict

if TYPE_CHECKING:
    from transformer_lens.model_bridge.bridge import TransformerBridge

MODEL_FORMAT = "monosemantic-native-model"
MODEL_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NATIVE_ARCHITECTURE = "TransformerLensNative"


@dataclass
class LoadedModel:
    """A model ready for hooks: `bridge(tokens)` gives logits [batch, pos, d_vocab]."""

    bridge: TransformerBridge
    tokenizer: Tokenizer
    name: str
    context_length: int

    @property
    def bos_id(self) -> int:
        return self.tokenizer.bos_id


def bridge_config(cfg: ModelConfig) -> dict[str, Any]:
    """The TransformerBridgeConfig fields of a native model, for `TransformerBridge.boot_native`."""
    return dict(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_head=cfg.d_model // cfg.n_heads,
        d_mlp=cfg.d_mlp,
        n_ctx=cfg.context_length,
        d_vocab=cfg.d_vocab,
        act_fn=cfg.act_fn,
        normalization_type=cfg.normalization_type,
        positional_embedding_type="standard",
        seed=cfg.seed,
    )


def build_native_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised NativeModel, exactly as `TransformerBridge.boot_native` builds it
    (same init, same seed), but not yet wrapped in a bridge, so it trains without hook overhead."""
    import transformer_lens.model_bridge.sources.native as native
    from transformer_lens.config import TransformerBridgeConfig

    cfg.validate()
    tl_cfg = TransformerBridgeConfig.from_dict(bridge_config(cfg))
    with torch.random.fork_rng(devices=[]):
        model = native.NativeModel(tl_cfg)
        native.initialize_native_model(model, tl_cfg)
    return model


def native_to_bridge(model: nn.Module, cfg: ModelConfig, name: str = "native") -> TransformerBridge:
    """Wrap a NativeModel in a TransformerBridge. The bridge takes the module over in place (its
    submodules become bridge components sharing the same parameters): save before wrapping."""
    from transformer_lens.config import TransformerBridgeConfig

    bridge = bridge_from_module(model, NATIVE_ARCHITECTURE, TransformerBridgeConfig.from_dict(bridge_config(cfg)), name)
    return bridge.eval()


def weights_fingerprint(model: nn.Module) -> str:
    """Short hash of the model's parameters (names, shapes and up to 4096 evenly spaced values each):
    what a capture, an SAE or an analysis records of the model it was built from, so that a
    retrained model is noticed."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 4096)].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{list(tensor.shape)}{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's (first) parameter."""
    return next(model.parameters()).device


def save_model(
    model: nn.Module, cfg: ModelConfig, tokenizer: Tokenizer, folder: str | Path, *, training: dict | None = None
) -> Path:
    """Write config.json, model.safetensors and tokenizer.json of an unwrapped NativeModel."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    write_safetensors(folder / WEIGHTS_FILE, state, metadata={"format": MODEL_FORMAT})
    tokenizer.save(folder)
    config = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "architecture": NATIVE_ARCHITECTURE,
        "model": dataclasses.asdict(cfg),
        "tokenizer_file": TOKENIZER_FILE,
        "bos_id": tokenizer.bos_id,
        "training": training or {},
    }
    write_json(folder / CONFIG_FILE, config)
    return folder


def load_model(spec: str | Path, device: str | torch.device | None = None) -> LoadedModel:
    """Load by spec: a folder saved by `save_model`; a local Hugging Face checkpoint folder
    (config.json + weights + tokenizer); or a Hugging Face model name (needs network). device:
    None (cpu), auto, cpu, cuda or cuda:N (checked before anything loads)."""
    if device is not None:
        device = resolve_device(str(device))
    path = Path(spec)
    if path.is_dir():
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(
                f"model folder {path} has no {CONFIG_FILE}; it is neither a model saved by "
                "`interp model train` nor a Hugging Face checkpoint folder."
            )
        config = read_json(config_path, fix="re-save the model with `interp model train`")
        if config.get("format") == MODEL_FORMAT:
            return _load_native(path, config, device)
        return _load_hugging_face(str(path), device)
    if path.exists() or str(spec).startswith((".", "/", "~")) or str(spec).count("/") > 1:
        raise FileNotFoundError(
            f"model {str(spec)!r} is not a folder; pass a model folder or a Hugging Face model name."
        )
    return _load_hugging_face(str(spec), device)


def _load_native(folder: Path, config: dict, device: str | torch.device | None) -> LoadedModel:

    if config.get("format_version") != MODEL_FORMAT_VERSION:
        raise ValueError(
            f"{folder / CONFIG_FILE}: format_version {config.get('format_version')!r} is not "
            f"{MODEL_FORMAT_VERSION}; this toolkit cannot read it."
        )
    cfg = from_dict(ModelConfig, config.get("model", {}), str(folder / CONFIG_FILE))
    tokenizer_file = inside(
        folder, config.get("tokenizer_file", TOKENIZER_FILE), source=str(folder / CONFIG_FILE), field="tokenizer_file"
    )
    for path in (folder / WEIGHTS_FILE, tokenizer_file):
        if not path.is_file():
            raise FileNotFoundError(
                f"model folder {folder} is missing {path.name}; re-save the model or copy the file back."
            )
    tokenizer = Tokenizer.load(tokenizer_file)
    model = build_native_model(cfg)
    state = read_safetensors(folder / WEIGHTS_FILE, fix="re-train the model or copy the file back", finite=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{folder / WEIGHTS_FILE} does not match the model in {folder / CONFIG_FILE}: {err}") from err
    if device is not None:
        model = model.to(device)
    bridge = native_to_bridge(model, cfg, name=folder.name)
    return LoadedModel(bridge=bridge, tokenizer=tokenizer, name=folder.name, context_length=cfg.context_length)


def _load_hugging_face(name_or_folder: str, device: str | torch.device | None) -> LoadedModel:
    """One path for a local checkpoint folder and a hub name: `TransformerBridge.boot_transformers`."""
    import transformer_lens.model_bridge.sources.transformers  # noqa: F401  (attaches boot_transformers)
    from transformer_lens.model_bridge.bridge import TransformerBridge

    try:
        tokenizer = Tokenizer.from_pretrained(name_or_folder)
        bridge = TransformerBridge.boot_transformers(name_or_folder, device=device)
    except (OSError, ValueError) as err:
        where = "folder" if Path(name_or_folder).is_dir() else "model name"
        raise ValueError(
            f"cannot load Hugging Face {where} {name_or_folder!r}: {err} "
            "(a model name needs network access; offline, pass a local checkpoint folder)."
        ) from err
    return LoadedModel(
        bridge=bridge.eval(), tokenizer=tokenizer, name=name_or_folder, context_length=int(bridge.cfg.n_ctx)
    )


@torch.no_grad()
def generate(
    model: nn.Module, tokens: Tensor, new_tokens: int, *, context_length: int, temperature: float = 0.0, seed: int = 0
) -> Tensor:
    """Extend `tokens` [pos] by `new_tokens` ids: greedy when temperature is 0, else sampled from
    softmax(logits / temperature) with a generator seeded by `seed`. `model(ids [1, pos])` must
    return logits [1, pos, d_vocab] (a bridge or a NativeModel). Returns [pos + new_tokens]."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    generator = torch.Generator().manual_seed(seed)
    out = tokens.to(torch.long).cpu()
    device = model_device(model)
    for _ in range(new_tokens):
        logits = model(out[-context_length:][None].to(device))[0, -1].float().cpu()
        if temperature == 0:
            next_id = logits.argmax()
        else:
            next_id = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)[0]
        out = torch.cat([out, next_id.view(1)])
    return out


def sample_text(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    new_tokens: int,
    *,
    context_length: int,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """The prompt's continuation (without the prompt) from BOS + prompt."""
    prompt_ids = torch.tensor([tokenizer.bos_id, *tokenizer.encode(prompt)])
    ids = generate(model, prompt_ids, new_tokens, context_length=context_length, temperature=temperature, seed=seed)
    return tokenizer.decode(ids[len(prompt_ids) :].tolist())
