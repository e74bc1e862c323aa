"""SAE files: the SAELens layout (ours) and the sparsify layout, auto-detected on load.

SAELens layout, a folder with
  cfg.json                 architecture (SAELens name), d_in, d_sae, dtype, apply_b_dec_to_input,
                           normalize_activations "none", metadata {hook_name, model_name, ...},
                           architecture fields (k, ...), and a `monosemantic` block:
                           {format_version, architecture, config} = the full typed config as trained
  sae_weights.safetensors  W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
                           threshold [d_sae] (jumprelu); gated: b_gate, r_mag, b_mag and no b_enc
sparsify layout (TopK only), a folder with
  cfg.json                 activation "topk", k, num_latents, d_in, ...
  sae.safetensors          encoder.weight [d_sae, d_in], encoder.bias [d_sae], W_dec, b_dec

An SAE is saved in its inference form (BatchTopK and Matryoshka become JumpReLU). SAELens TopK
files with rescale_acts_by_decoder_norm are loaded with the decoder norms folded into the
encoder (same features, unit-norm decoder rows). Loading never unpickles: JSON and safetensors only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae.architectures import SAE, get_architecture
from sae.architectures.topk import TopKSAE
from sae.config import TopKConfig
from sae.files import read_json, read_safetensors, write_json, write_safetensors

FORMAT_VERSION = 1
SAELENS_FORMAT_VERSION = "6.0.0"
CFG_FILE = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"

# Our architecture name -> SAELens's, for the architectures a file can hold.
SAELENS_ARCHITECTURE = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
FROM_SAELENS_ARCHITECTURE = {v: k for k, v in SAELENS_ARCHITECTURE.items()}


# --- writing ---------------------------------------------------------------------------------


def _write_atomically(folder: Path, tensors: dict[str, Tensor], weights_name: str, cfg: dict[str, Any]) -> None:
    """Write the weights, then cfg.json, into folder, each atomically (cfg.json last: it marks a complete SAE)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    write_safetensors(folder / weights_name, tensors)
    write_json(folder / CFG_FILE, cfg)


def weights_fingerprint(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of an SAE folder's weights file: which SAE it is, not
    only its shape."""
    layout, folder = detect_layout(path)
    weights = folder / (SAELENS_WEIGHTS if layout == "saelens" else SPARSIFY_WEIGHTS)
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def save_sae(sae: SAE, path: str | os.PathLike, *, metadata: dict | None = None) -> None:
    """Write `sae` in the SAELens layout (its inference form) into the folder `path`.

    metadata: merged over `sae.metadata` into cfg.json's `metadata` (hook_name, model_name, ...).
    """
    inference = sae.inference_form()
    if inference.arch not in SAELENS_ARCHITECTURE:
        raise ValueError(
            f"architecture {inference.arch!r} has no SAELens file form; savable: {sorted(SAELENS_ARCHITECTURE)}"
        )
    c = inference.cfg
    # sae_lens_version names the SAELens config format followed here: SAELens reads a cfg.json
    # without it as a pre-6.0 file and then looks for hook_name outside `metadata`.
    merged = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "hook_name": None,
        "model_name": None,
        **sae.metadata,
        **(metadata or {}),
    }
    cfg: dict[str, Any] = {
        "architecture": SAELENS_ARCHITECTURE[inference.arch],
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": _dtype_name(inference.W_dec.dtype),
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": merged,
    }
    if inference.arch == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = False
    cfg["monosemantic"] = {"format_version": FORMAT_VERSION, "architecture": sae.arch, "config": sae.cfg.to_dict()}
    _write_atomically(Path(path), inference.file_tensors(), SAELENS_WEIGHTS, cfg)


def save_sparsify(sae: SAE, path: str | os.PathLike) -> None:
    """Write a TopK SAE in the sparsify layout (cfg.json + sae.safetensors) into the folder `path`."""
    if sae.arch != "topk":
        raise ValueError(
            f"the sparsify layout holds TopK SAEs only; this SAE is {sae.arch!r}. "
            "Save it in the SAELens layout instead (save_sae / --to saelens)"
        )
    c = sae.cfg
    cfg = {
        "activation": "topk",
        "expansion_factor": max(1, c.d_sae // c.d_in),
        "normalize_decoder": True,
        "num_latents": c.d_sae,
        "k": c.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": not c.apply_b_dec_to_input,
        "d_in": c.d_in,
    }
    tensors = {
        "encoder.weight": sae.W_enc.detach().t(),
        "encoder.bias": sae.b_enc.detach(),
        "W_dec": sae.W_dec.detach(),
        "b_dec": sae.b_dec.detach(),
    }
    _write_atomically(Path(path), tensors, SPARSIFY_WEIGHTS, cfg)


# --- reading ---------------------------------------------------------------------------------


def detect_layout(path: str | os.PathLike) -> tuple[str, Path]:
    """("saelens" | "sparsify", the folder holding the files) for an SAE folder.

    A folder without cfg.json but with exactly one sub-folder that has one is accepted (sparsify
    writes one sub-folder per hookpoint).
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"no SAE at {folder}: the path does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; pass the SAE folder (holding {CFG_FILE} and the weights)")
    if not (folder / CFG_FILE).exists():
        candidates = sorted(p.parent for p in folder.glob(f"*/{CFG_FILE}"))
        if len(candidates) == 1:
            folder = candidates[0]
        elif candidates:
            names = ", ".join(p.name for p in candidates)
            raise ValueError(f"{folder} holds several SAEs ({names}); pass one of those folders")
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    has_cfg = CFG_FILE in found
    if has_cfg and SAELENS_WEIGHTS in found:
        return "saelens", folder
    if has_cfg and SPARSIFY_WEIGHTS in found:
        return "sparsify", folder
    raise ValueError(
        f"{folder} is not an SAE folder: found {found or 'nothing'}; expected {CFG_FILE} with "
        f"{SAELENS_WEIGHTS} (SAELens layout) or {SPARSIFY_WEIGHTS} (sparsify layout)"
    )


def _require_int(cfg: dict[str, Any], name: str, file: Path) -> int:
    value = cfg.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{file}: field {name!r} must be a positive integer, found {value!r}")
    return value


def _check_tensors(sae: SAE, tensors: dict[str, Tensor], weights: Path, cfg_file: Path) -> None:
    """Names and shapes of the file's tensors against what the cfg.json describes."""
    expected = {name: tuple(t.shape) for name, t in sae.file_tensors().items()}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{weights}: tensors do not match a {sae.arch!r} SAE: missing {missing}, unexpected {unexpected} "
            f"(found {sorted(tensors)})"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{weights}: tensor {name!r} has shape {list(tensors[name].shape)}, but {cfg_file} "
                f"(d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae}) implies {list(shape)}"
            )


def _build_from_saelens_cfg(cfg: dict[str, Any], file: Path) -> SAE:
    architecture = cfg.get("architecture")
    if architecture is None:  # SAELens files before v6 name the activation instead
        activation = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
        architecture = "topk" if activation == "topk" else "standard"
        if architecture == "topk" and "k" not in cfg:
            cfg = {**cfg, "k": (cfg.get("activation_fn_kwargs") or {}).get("k")}
    if architecture not in FROM_SAELENS_ARCHITECTURE:
        raise ValueError(
            f"{file}: architecture {architecture!r} is not supported; supported: {sorted(FROM_SAELENS_ARCHITECTURE)}"
        )
    for field_name in ("normalize_activations", "reshape_activations"):
        value = cfg.get(field_name) or "none"
        if value != "none":
            raise ValueError(
                f"{file}: {field_name}={value!r} is not supported (only 'none'); fold the normalisation into "
                "the weights before saving"
            )
    arch = FROM_SAELENS_ARCHITECTURE[architecture]
    d_in, d_sae = _require_int(cfg, "d_in", file), _require_int(cfg, "d_sae", file)
    own = cfg.get("monosemantic")
    config_class = get_architecture(arch).config_class
    if isinstance(own, dict) and own.get("architecture") == arch:
        config = config_class.from_dict(own["config"])
        if (config.d_in, config.d_sae) != (d_in, d_sae):
            raise ValueError(
                f"{file}: monosemantic.config has d_in={config.d_in}, d_sae={config.d_sae} but the SAELens fields say "
                f"d_in={d_in}, d_sae={d_sae}"
            )
        if "k" in cfg and hasattr(config, "k") and _require_int(cfg, "k", file) != config.k:
            raise ValueError(
                f"{file}: the top-level field 'k' (what SAELens reads) is {cfg['k']} but monosemantic.config.k is "
                f"{config.k}; make them equal (re-save the SAE with sae.io.save_sae)"
            )
    else:
        fields: dict[str, Any] = {
            "d_in": d_in,
            "d_sae": d_sae,
            "apply_b_dec_to_input": bool(cfg.get("apply_b_dec_to_input", True)),
        }
        if arch == "topk":
            fields["k"] = _require_int(cfg, "k", file)
        config = config_class.from_dict(fields)
    return get_architecture(arch)(config)


def _fold_decoder_norms(tensors: dict[str, Tensor]) -> None:
    """SAELens TopK with rescale_acts_by_decoder_norm scores latents by pre_i * ||W_dec[i]|| and
    decodes f_i / ||W_dec[i]||; folding the norms into W_enc / b_enc gives the same features with a
    unit-norm decoder."""
    norms = tensors["W_dec"].norm(dim=1)
    tensors["W_enc"] = tensors["W_enc"] * norms
    tensors["b_enc"] = tensors["b_enc"] * norms
    tensors["W_dec"] = tensors["W_dec"] / norms[:, None]


def _load_saelens(folder: Path) -> SAE:
    cfg_file, weights = folder / CFG_FILE, folder / SAELENS_WEIGHTS
    cfg = read_json(cfg_file)
    sae = _build_from_saelens_cfg(cfg, cfg_file)
    tensors = read_safetensors(weights, fix="re-save or re-train the SAE", finite=True)
    _check_tensors(sae, tensors, weights, cfg_file)
    if sae.arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        _fold_decoder_norms(tensors)
    sae.to(dtype=tensors["W_dec"].dtype)
    sae.load_file_tensors(tensors)
    if "metadata" in cfg:
        sae.metadata = dict(cfg["metadata"] or {})
    else:  # before SAELens 6 these lived at the top level
        sae.metadata = {key: cfg[key] for key in ("hook_name", "model_name") if key in cfg}
    return sae


def _load_sparsify(folder: Path) -> SAE:
    cfg_file, weights = folder / CFG_FILE, folder / SPARSIFY_WEIGHTS
    cfg = read_json(cfg_file)
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise ValueError(f"{cfg_file}: activation {activation!r} is not supported; only sparsify 'topk' SAEs load")
    if cfg.get("skip_connection", False):
        raise ValueError(f"{cfg_file}: skip_connection=true (a W_skip term) is not supported")
    tensors = read_safetensors(weights, fix="re-save or re-train the SAE", finite=True)
    if "encoder.weight" not in tensors:
        raise ValueError(f"{weights}: no 'encoder.weight' tensor (found {sorted(tensors)})")
    if "d_in" not in cfg:  # older sparsify configs leave d_in to the weights
        cfg = {**cfg, "d_in": tensors["encoder.weight"].shape[1]}
    d_in = _require_int(cfg, "d_in", cfg_file)
    if not cfg.get("num_latents"):  # 0 means d_in * expansion_factor
        cfg = {**cfg, "num_latents": d_in * (cfg.get("expansion_factor") or 0)}
    d_sae = _require_int(cfg, "num_latents", cfg_file)
    k = _require_int(cfg, "k", cfg_file)
    sae = TopKSAE(TopKConfig(d_in=d_in, d_sae=d_sae, k=k, apply_b_dec_to_input=not cfg.get("transcode", False)))
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights}: missing tensors {missing}, unexpected {unexpected} (found {sorted(tensors)})")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{weights}: tensor {name!r} has shape {list(tensors[name].shape)}, but {cfg_file} "
                f"(d_in={d_in}, num_latents={d_sae}) implies {list(shape)}"
            )
    sae.to(dtype=tensors["W_dec"].dtype)
    sae.load_file_tensors(
        {
            "W_enc": tensors["encoder.weight"].t().contiguous(),
            "b_enc": tensors["encoder.bias"],
            "W_dec": tensors["W_dec"],
            "b_dec": tensors["b_dec"],
        }
    )
    sae.metadata = {"hook_name": folder.name}  # sparsify names each SAE's folder by its hookpoint
    return sae


def load_sae(path: str | os.PathLike, device: str | torch.device | None = None) -> SAE:
    """Load an SAE folder in the SAELens or the sparsify layout (auto-detected), in eval mode."""
    layout, folder = detect_layout(path)
    sae = _load_saelens(folder) if layout == "saelens" else _load_sparsify(folder)
    if device is not None:
        sae.to(device)
    return sae.eval()


# --- command line ----------------------------------------------------------------------------


def convert(
    src: str | os.PathLike, src_format: str, dst: str | os.PathLike, dst_format: str, force: bool = False
) -> SAE:
    """Read `src` (which must be in `src_format`) and write it to `dst` in `dst_format`."""
    layout, _ = detect_layout(src)
    if layout != src_format:
        raise ValueError(f"{src} is in the {layout} layout, not {src_format}; pass --from {layout}")
    if (Path(dst) / CFG_FILE).exists() and not force:
        raise ValueError(f"{Path(dst) / CFG_FILE} already exists; choose another destination or pass --force")
    sae = load_sae(src)
    if dst_format == "sparsify":
        save_sparsify(sae, dst)
    else:
        save_sae(sae, dst)
    return sae
