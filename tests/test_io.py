"""SAE files: peer fixtures reproduce their reference outputs, every architecture round-trips exactly,
`sae convert`, and clear errors for folders and tensors that do not fit."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae.architectures import TrainState, build_sae
from sae.cli import main as sae_main
from sae.io import detect_layout, load_sae, save_sae, save_sparsify

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
if not FIXTURES.exists():
    FIXTURES = Path("/work/shared/fixtures")
FIXTURE_ARCH = {
    "saelens-6.54.12-standard": "relu",
    "saelens-6.54.12-topk": "topk",
    "saelens-6.54.12-jumprelu": "jumprelu",
    "sparsify-1.3.3-topk": "topk",
}
FIELDS = {
    "relu": {},
    "topk": dict(k=4, aux_k=7),
    "batchtopk": dict(k=4),
    "jumprelu": dict(l0_coefficient=0.5),
    "gated": dict(l1_coefficient=0.2),
    "matryoshka": dict(k=4, prefixes=[8, 32, 64]),
}


def trained_ish(arch, dtype=torch.float32, seed=0):
    """An SAE with random weights and, for BatchTopK, a learned threshold."""
    torch.manual_seed(seed)
    sae = build_sae(arch, d_in=16, d_sae=64, **FIELDS[arch]).to(dtype)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    sae.train_step(torch.randn(32, 16, dtype=dtype), TrainState(0, 1))
    return sae


@pytest.mark.parametrize("name", sorted(FIXTURE_ARCH))
def test_peer_fixtures_reproduce_their_reference_outputs(name):
    folder = FIXTURES / name
    reference = load_file(next(folder.rglob("reference_io.safetensors")))
    sae = load_sae(folder)
    assert sae.arch == FIXTURE_ARCH[name]
    with torch.no_grad():
        features = sae.encode(reference["x"])
        reconstruction = sae.decode(features)
        exact = load_sae(folder).double()
        exact_reconstruction = exact.decode(exact.encode(reference["x"].double()))
    # Reconstructions reach |x_hat| ~ 30, where float32 carries about 7 significant digits: the peer's own
    # reference lies ~1e-5 from the float64 result, by its summation order. Hence 1e-5 relative to the
    # largest value, and ours within float32 rounding (1e-6 relative) of the float64 result.
    scale = float(reference["reconstruction"].abs().max())
    assert (features - reference["features"]).abs().max() < 1e-5
    assert (reconstruction - reference["reconstruction"]).abs().max() < 1e-5 * max(1.0, scale)
    assert (reconstruction.double() - exact_reconstruction).abs().max() < 1e-6 * max(1.0, scale)
    assert (features > 0).sum() > 0


def test_saelens_fixture_metadata_and_sparsify_hookpoint_folder():
    sae = load_sae(FIXTURES / "saelens-6.54.12-topk")
    assert sae.metadata["hook_name"] == "blocks.0.hook_resid_post" and sae.cfg.k == 8
    assert detect_layout(FIXTURES / "sparsify-1.3.3-topk") == (
        "sparsify",
        FIXTURES / "sparsify-1.3.3-topk" / "layers.0",
    )
    assert load_sae(FIXTURES / "sparsify-1.3.3-topk" / "layers.0").metadata == {"hook_name": "layers.0"}


@pytest.mark.parametrize("arch", sorted(FIELDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_of_every_architecture_is_exact(arch, dtype, tmp_path):
    sae = trained_ish(arch, dtype)
    save_sae(sae, tmp_path, metadata={"hook_name": "blocks.1.hook_resid_post", "model_name": "tiny"})
    loaded = load_sae(tmp_path)
    inference = sae.inference_form()
    assert loaded.arch == inference.arch
    saved = inference.file_tensors()
    assert set(loaded.file_tensors()) == set(saved)
    for name, tensor in loaded.file_tensors().items():
        assert tensor.dtype == dtype and torch.equal(tensor, saved[name]), name
    x = torch.randn(50, 16, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), inference.encode(x))
        assert torch.equal(loaded(x), inference(x))
    if loaded.arch == arch:  # the full typed config comes back
        assert loaded.cfg == sae.cfg
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post" and cfg["metadata"]["model_name"] == "tiny"
    assert cfg["monosemantic"]["architecture"] == arch and cfg["monosemantic"]["config"] == sae.cfg.to_dict()
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"] is True
    save_sae(loaded, tmp_path / "again")
    again = load_file(tmp_path / "again" / "sae_weights.safetensors")
    assert all(torch.equal(again[n], t) for n, t in load_file(tmp_path / "sae_weights.safetensors").items())


def test_saelens_names_and_shapes_on_disk(tmp_path):
    expected = {
        "relu": ("standard", {"W_enc": [16, 64], "b_enc": [64], "W_dec": [64, 16], "b_dec": [16]}),
        "topk": ("topk", {"W_enc": [16, 64], "b_enc": [64], "W_dec": [64, 16], "b_dec": [16]}),
        "batchtopk": (
            "jumprelu",
            {"W_enc": [16, 64], "b_enc": [64], "W_dec": [64, 16], "b_dec": [16], "threshold": [64]},
        ),
        "gated": (
            "gated",
            {"W_enc": [16, 64], "b_gate": [64], "r_mag": [64], "b_mag": [64], "W_dec": [64, 16], "b_dec": [16]},
        ),
    }
    for arch, (saelens_name, shapes) in expected.items():
        save_sae(trained_ish(arch), tmp_path / arch)
        tensors = load_file(tmp_path / arch / "sae_weights.safetensors")
        assert {n: list(t.shape) for n, t in tensors.items()} == shapes
        assert json.loads((tmp_path / arch / "cfg.json").read_text())["architecture"] == saelens_name
    assert json.loads((tmp_path / "topk" / "cfg.json").read_text())["k"] == 4


def test_sparsify_round_trip_is_exact_and_non_topk_is_refused(tmp_path):
    sae = trained_ish("topk")
    save_sparsify(sae, tmp_path / "s")
    tensors = load_file(tmp_path / "s" / "sae.safetensors")
    assert {n: list(t.shape) for n, t in tensors.items()} == {
        "encoder.weight": [64, 16],
        "encoder.bias": [64],
        "W_dec": [64, 16],
        "b_dec": [16],
    }
    loaded = load_sae(tmp_path / "s")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(loaded, name), getattr(sae, name)), name
    assert loaded.cfg.k == 4
    with pytest.raises(ValueError, match="sparsify layout holds TopK SAEs only; this SAE is 'jumprelu'"):
        save_sparsify(trained_ish("jumprelu"), tmp_path / "j")


def test_saelens_topk_rescaled_by_decoder_norm_loads_with_the_norms_folded(tmp_path):
    g = torch.Generator().manual_seed(0)
    W_enc, W_dec = torch.randn(16, 64, generator=g), torch.randn(64, 16, generator=g) * 3
    b_enc, b_dec = torch.randn(64, generator=g), torch.randn(16, generator=g)
    save_file({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, tmp_path / "sae_weights.safetensors")
    cfg = {
        "architecture": "topk",
        "d_in": 16,
        "d_sae": 64,
        "k": 5,
        "rescale_acts_by_decoder_norm": True,
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "dtype": "float32",
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    x = torch.randn(20, 16, generator=g)
    norms = W_dec.norm(dim=1)
    scored = ((x - b_dec) @ W_enc + b_enc) * norms  # SAELens: rank latents by pre * ||W_dec||
    top = scored.topk(5, dim=1)
    f = torch.zeros_like(scored).scatter(1, top.indices, top.values.relu())
    x_hat = (f / norms) @ W_dec + b_dec
    sae = load_sae(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x), x_hat, rtol=1e-5, atol=1e-5)
    assert (sae.W_dec.norm(dim=1) - 1).abs().max() < 1e-6


def test_convert_cli_between_layouts(tmp_path, capsys):
    src = FIXTURES / "sparsify-1.3.3-topk"
    assert sae_main(["convert", "--from", "sparsify", str(src), "--to", "saelens", str(tmp_path / "a")]) == 0
    assert sae_main(["convert", "--from", "saelens", str(tmp_path / "a"), "--to", "sparsify", str(tmp_path / "b")]) == 0
    original, via_saelens, back = load_sae(src), load_sae(tmp_path / "a"), load_sae(tmp_path / "b")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(via_saelens, name), getattr(original, name))
        assert torch.equal(getattr(back, name), getattr(original, name))
    assert json.loads((tmp_path / "a" / "cfg.json").read_text())["metadata"]["hook_name"] == "layers.0"
    capsys.readouterr()
    assert (
        sae_main(
            [
                "convert",
                "--from",
                "saelens",
                str(FIXTURES / "saelens-6.54.12-standard"),
                "--to",
                "sparsify",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert "sparsify layout holds TopK SAEs only; this SAE is 'relu'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert sae_main(["convert", "--from", "sparsify", str(tmp_path / "a"), "--to", "saelens", str(tmp_path / "d")]) == 2
    assert "is in the saelens layout, not sparsify; pass --from saelens" in capsys.readouterr().err
    assert sae_main(["convert", "--from", "sparsify", str(src), "--to", "saelens", str(tmp_path / "a")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sae_main(["convert", "--from", "sparsify", str(src), "--to", "saelens", str(tmp_path / "a"), "--force"]) == 0


def test_python_dash_m_sae_convert(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sae",
            "convert",
            "--from",
            "saelens",
            str(FIXTURES / "saelens-6.54.12-topk"),
            "--to",
            "sparsify",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "sae.safetensors").exists()


# --- errors ----------------------------------------------------------------------------------


def test_missing_path_and_folders_in_neither_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sae(tmp_path / "nowhere")
    (tmp_path / "cfg.json").write_text("{}")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"found \['cfg.json', 'weights.bin'\]; expected cfg.json with sae_weights.safetensors"
    ):
        load_sae(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="found nothing"):
        load_sae(empty)
    with pytest.raises(ValueError, match="is a file; pass the SAE folder"):
        load_sae(tmp_path / "cfg.json")


def test_folder_with_several_saes_asks_for_one(tmp_path):
    for name in ("layers.0", "layers.1"):
        shutil.copytree(FIXTURES / "sparsify-1.3.3-topk" / "layers.0", tmp_path / name)
    with pytest.raises(ValueError, match=r"holds several SAEs \(layers.0, layers.1\); pass one of those folders"):
        load_sae(tmp_path)


def copy_fixture(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    for p in dst.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return dst


def edit_cfg(folder, **changes):
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update(changes)
    (folder / "cfg.json").write_text(json.dumps(cfg))


def test_tensor_shape_that_disagrees_with_cfg_names_both(tmp_path):
    folder = copy_fixture("saelens-6.54.12-standard", tmp_path)
    edit_cfg(folder, d_sae=128)
    with pytest.raises(
        ValueError,
        match=r"tensor 'W_enc' has shape \[64, 256\], but .*cfg.json \(d_in=64, d_sae=128\) implies \[64, 128\]",
    ):
        load_sae(folder)
    sparsify = copy_fixture("sparsify-1.3.3-topk", tmp_path) / "layers.0"
    edit_cfg(sparsify, num_latents=512)
    with pytest.raises(
        ValueError, match=r"tensor 'encoder.weight' has shape \[256, 64\], but .*num_latents=512\) implies \[512, 64\]"
    ):
        load_sae(sparsify)


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
    folder = copy_fixture("saelens-6.54.12-jumprelu", tmp_path)
    tensors = load_file(folder / "sae_weights.safetensors")
    tensors["extra"] = tensors.pop("threshold")
    save_file(tensors, folder / "sae_weights.safetensors")
    with pytest.raises(ValueError, match=r"missing \['threshold'\], unexpected \['extra'\]"):
        load_sae(folder)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(architecture="transcoder"), "architecture 'transcoder' is not supported; supported: "),
        (
            dict(normalize_activations="expected_average_only_in"),
            "normalize_activations='expected_average_only_in' is not supported",
        ),
        (dict(d_in="64"), "field 'd_in' must be a positive integer, found '64'"),
        (dict(k=None), "field 'k' must be a positive integer, found None"),
    ],
)
def test_bad_saelens_cfg_fields_are_named(tmp_path, changes, message):
    folder = copy_fixture("saelens-6.54.12-topk", tmp_path)
    edit_cfg(folder, **changes)
    with pytest.raises(ValueError, match=message):
        load_sae(folder)


def test_bad_json_and_negative_threshold(tmp_path):
    folder = copy_fixture("saelens-6.54.12-jumprelu", tmp_path)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="cfg.json is not readable JSON"):
        load_sae(folder)
    folder = copy_fixture("saelens-6.54.12-jumprelu", tmp_path / "second")
    tensors = load_file(folder / "sae_weights.safetensors")
    tensors["threshold"][3] = -0.5
    save_file(tensors, folder / "sae_weights.safetensors")
    with pytest.raises(ValueError, match="threshold has 1 negative value"):
        load_sae(folder)


def test_sparsify_unsupported_variants(tmp_path):
    folder = copy_fixture("sparsify-1.3.3-topk", tmp_path) / "layers.0"
    edit_cfg(folder, activation="groupmax")
    with pytest.raises(ValueError, match="activation 'groupmax' is not supported"):
        load_sae(folder)
    edit_cfg(folder, activation="topk", skip_connection=True)
    with pytest.raises(ValueError, match="skip_connection=true"):
        load_sae(folder)


# --- peers, when an environment with them is at hand -----------------------------------------

# Opt-in (importing SAELens takes tens of seconds): MONOSEMANTIC_PEERS_PYTHON=/path/to/python of an
# environment with sae-lens and eai-sparsify installed.
PEERS_PYTHON = os.environ.get("MONOSEMANTIC_PEERS_PYTHON", "")


@pytest.mark.skipif(not PEERS_PYTHON, reason="set MONOSEMANTIC_PEERS_PYTHON to a python with sae-lens and eai-sparsify")
def test_saved_files_load_in_saelens_and_sparsify(tmp_path):
    x = torch.randn(40, 16)
    save_file({"x": x}, tmp_path / "x.safetensors")
    for arch in FIELDS:
        sae = trained_ish(arch)
        save_sae(sae, tmp_path / arch, metadata={"hook_name": "blocks.0.hook_resid_post"})
        with torch.no_grad():
            f = sae.inference_form().encode(x)
            save_file({"f": f, "x_hat": sae.inference_form().decode(f)}, tmp_path / arch / "expected.safetensors")
    save_sparsify(trained_ish("topk"), tmp_path / "sparsify")
    with torch.no_grad():
        save_file({"x_hat": trained_ish("topk")(x)}, tmp_path / "sparsify_expected.safetensors")
    script = f"""
import torch
from safetensors.torch import load_file
from sae_lens import SAE
from sparsify import Sae
root = {str(tmp_path)!r}
x = load_file(root + "/x.safetensors")["x"]
for arch in {sorted(FIELDS)!r}:
    sae = SAE.load_from_disk(root + "/" + arch)
    ref = load_file(root + "/" + arch + "/expected.safetensors")
    with torch.no_grad():
        f = sae.encode(x)
        assert (f - ref["f"]).abs().max() < 1e-5, arch
        assert (sae.decode(f) - ref["x_hat"]).abs().max() < 1e-5, arch
    assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post", arch
out = Sae.load_from_disk(root + "/sparsify")(x).sae_out
assert (out - load_file(root + "/sparsify_expected.safetensors")["x_hat"]).abs().max() < 1e-5
print("ok")
"""
    result = subprocess.run([PEERS_PYTHON, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_saelens_files_from_before_v6_name_the_activation(tmp_path):
    folder = copy_fixture("saelens-6.54.12-topk", tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    for key in ("architecture", "k", "metadata", "rescale_acts_by_decoder_norm"):
        cfg.pop(key)
    cfg.update(activation_fn_str="topk", activation_fn_kwargs={"k": 8}, hook_name="blocks.0.hook_resid_post")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(folder)
    reference = load_file(folder / "reference_io.safetensors")
    assert sae.arch == "topk" and sae.cfg.k == 8 and sae.metadata == {"hook_name": "blocks.0.hook_resid_post"}
    with torch.no_grad():
        assert (sae.encode(reference["x"]) - reference["features"]).abs().max() < 1e-5


@pytest.mark.parametrize(
    "top_level_k, message",
    [
        (7, "top-level field 'k' .* is 7 but monosemantic.config.k is 5"),
        ("8", "field 'k' must be a positive integer, found '8'"),
        (None, "field 'k' must be a positive integer, found None"),
    ],
)
def test_our_cfg_with_two_disagreeing_values_of_k_is_refused(tmp_path, top_level_k, message):
    """cfg.json carries k twice (top level for SAELens, monosemantic.config for us): they must agree."""
    sae = build_sae("topk", d_in=12, d_sae=24, k=5)
    save_sae(sae, tmp_path / "sae")
    load_sae(tmp_path / "sae")  # as saved: both say 5
    edit_cfg(tmp_path / "sae", k=top_level_k)
    with pytest.raises(ValueError, match=message):
        load_sae(tmp_path / "sae")


def test_nan_weights_and_truncated_files_are_named(tmp_path):
    sae = build_sae("topk", d_in=12, d_sae=24, k=5)
    save_sae(sae, tmp_path / "sae")
    weights = tmp_path / "sae" / "sae_weights.safetensors"
    tensors = load_file(weights)
    tensors["W_dec"][3] = float("nan")
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=r"tensor 'W_dec' holds NaN or Inf \(rows \[3\]"):
        load_sae(tmp_path / "sae")
    weights.write_bytes(weights.read_bytes()[:-50])
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file"):
        load_sae(tmp_path / "sae")
