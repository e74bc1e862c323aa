"""`interp train-sae`: SAEs trained from a model's activations as it runs equal SAEs trained on a
capture of the same tokens; one forward pass serves every hook; a resumed run seeks without running
the model on the windows before it and ends with the uninterrupted weights; hub sources offline."""

from __future__ import annotations

import json
import socket
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import interp.activations.hooks
import interp.activations.stream
from interp.app.cli.main import main as interp_main
from interp.model.config import ModelConfig
from interp.model.corpus import cut_at_line_breaks
from interp.model.tokenizer import train_tokenizer
from interp.model.transformer import build_native_model, save_model
from sae.cli import main as sae_main

SHAKESPEARE = "/work/shared/data/tinyshakespeare.txt"
CTX = 32
TOKENS = 40 * CTX - 5  # 9 batches of 128; the last window is partial
HOOKS = ("blocks.0.mlp.hook_post", "blocks.1.hook_resid_pre")
SAE_ARGS = [
    "--arch",
    "topk",
    "--d-sae",
    "64",
    "--k",
    "4",
    "--batch-size",
    "128",
    "--init-tokens",
    "256",
    "--threads",
    "1",
    "--lr",
    "0.003",
    "--log-every",
    "3",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved 2-layer native model (untrained) with a 300-token BPE tokenizer of Shakespeare."""
    tokenizer = train_tokenizer(
        cut_at_line_breaks(Path(SHAKESPEARE).read_text()[:50_000]), vocab_size=300, show_progress=False
    )
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, context_length=CTX, d_vocab=tokenizer.vocab_size)
    return save_model(build_native_model(cfg), cfg, tokenizer, tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def forward_windows(monkeypatch) -> list[int]:
    """Counts the token windows every forward pass runs (one entry per pass)."""
    counts: list[int] = []
    plain = interp.activations.hooks.ActivationHooks.run

    def counted(self, tokens):
        counts.append(tokens.shape[0])
        return plain(self, tokens)

    monkeypatch.setattr(interp.activations.hooks.ActivationHooks, "run", counted)
    return counts


def stream_args(model: Path | str, out: Path, *extra: str, hooks=HOOKS, corpus: str = SHAKESPEARE) -> list[str]:
    return [
        "train-sae",
        "--model",
        str(model),
        *[a for h in hooks for a in ("--hook", h)],
        "--corpus",
        corpus,
        "--tokens",
        str(TOKENS),
        "--corpus-seed",
        "3",
        "--forward-batch",
        "4",
        "--out",
        str(out),
        *SAE_ARGS,
        *extra,
    ]


def assert_same_weights(a: Path, b: Path) -> None:
    expected, got = load_file(str(a / "sae_weights.safetensors")), load_file(str(b / "sae_weights.safetensors"))
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_streaming_equals_capture_then_train_and_shares_one_forward_pass(model_dir, tmp_path, forward_windows, capsys):
    assert (
        interp_main(
            [
                "capture",
                "--model",
                str(model_dir),
                *[a for h in HOOKS for a in ("--hook", h)],
                "--corpus",
                SHAKESPEARE,
                "--tokens",
                str(TOKENS),
                "--corpus-seed",
                "3",
                "--batch-size",
                "4",
                "--out",
                str(tmp_path / "acts"),
            ]
        )
        == 0
    )
    for hook in HOOKS:
        assert (
            sae_main(
                [
                    "train",
                    "--acts",
                    str(tmp_path / "acts" / hook),
                    "--shuffle-buffer",
                    "0",
                    "--out",
                    str(tmp_path / "disk" / hook),
                    *SAE_ARGS,
                ]
            )
            == 0
        )
    forward_windows.clear()
    assert interp_main(stream_args(model_dir, tmp_path / "stream", "--shuffle-buffer", "0")) == 0
    # a 1-window probe (hook shapes), then one pass per 4 windows serves both hooks, up to the last
    # batch's window (9 batches of 128 rows: windows 0..35)
    assert forward_windows == [1] + [4] * 9
    for hook in HOOKS:
        assert_same_weights(tmp_path / "disk" / hook, tmp_path / "stream" / hook)
        meta = json.loads((tmp_path / "stream" / hook / "cfg.json").read_text())["metadata"]
        assert meta["hook_name"] == hook and meta["model_name"] == "tiny" and meta["context_size"] == CTX
    config = json.loads((tmp_path / "stream" / "train_config.json").read_text())
    assert config["hooks"] == list(HOOKS) and config["tokens"] == TOKENS and config["corpus_seed"] == 3
    assert "saved 2 SAE(s)" in capsys.readouterr().out


def test_a_resumed_stream_seeks_and_ends_with_the_uninterrupted_weights(
    model_dir, tmp_path, forward_windows, monkeypatch
):
    # shuffle groups of 8 windows (256 rows); a sweep of two SAEs on one hook
    def args(out):
        return stream_args(
            model_dir, out, "--shuffle-buffer", "256", "--checkpoint-every", "3", "--k", "3,4", hooks=HOOKS[:1]
        )

    assert interp_main(args(tmp_path / "full")) == 0
    plain_next = interp.activations.stream.ModelActivationStream.__next__

    def dies_at_batch_7(self):
        if self.batch == 7:
            raise KeyboardInterrupt
        return plain_next(self)

    monkeypatch.setattr(interp.activations.stream.ModelActivationStream, "__next__", dies_at_batch_7)
    with pytest.raises(KeyboardInterrupt):
        interp_main(args(tmp_path / "cut"))
    monkeypatch.setattr(interp.activations.stream.ModelActivationStream, "__next__", plain_next)
    state = json.loads((tmp_path / "cut" / "checkpoint" / "step-00000006" / "state.json").read_text())
    assert state["data_position"]["stream"]["batch"] == 6
    forward_windows.clear()
    assert interp_main([*args(tmp_path / "cut"), "--resume"]) == 0
    # batch 6 starts at row 768, in group 3 (windows 24..31): windows 0..23 are skipped unrun;
    # the probe, then groups 3 and 4 (windows 24..39)
    assert forward_windows == [1] + [4] * 4
    for name in ("k3", "k4"):
        assert_same_weights(tmp_path / "full" / name, tmp_path / "cut" / name)


def test_resume_with_other_stream_settings_is_refused(model_dir, tmp_path, capsys):
    args = stream_args(model_dir, tmp_path / "run", "--steps", "3", hooks=HOOKS[:1])
    assert interp_main(args) == 0
    seed = args.index("--corpus-seed") + 1
    assert interp_main([*args[:seed], "4", *args[seed + 1 :], "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume the model activation stream" in err and "corpus_seed: state has 3, stream has 4" in err


@pytest.mark.filterwarnings("ignore:the data ran out")  # the trainer's own note on the short run
def test_bad_stream_sizes_are_refused_and_a_short_corpus_ends_the_run_early(model_dir, tmp_path, capsys):
    assert interp_main([*stream_args(model_dir, tmp_path / "a", hooks=HOOKS[:1]), "--batch-size", "2048"]) == 2
    assert "--tokens 1275 is less than one batch of 2048 tokens" in capsys.readouterr().err
    small = tmp_path / "small.txt"
    small.write_text(Path(SHAKESPEARE).read_text()[:1500])  # about 20 windows
    with pytest.warns(UserWarning, match="the corpus ran out after .* tokens, fewer than --tokens 1275"):
        assert (
            interp_main(
                stream_args(model_dir, tmp_path / "b", "--shuffle-buffer", "0", hooks=HOOKS[:1], corpus=str(small))
            )
            == 0
        )
    assert json.loads((tmp_path / "b" / "cfg.json").read_text())["metadata"]["training_tokens"] < 9 * 128
    # --epochs 0 passes over the short corpus as often as --tokens needs (reshuffled each pass)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the corpus does not run out
        argv = stream_args(model_dir, tmp_path / "c", "--shuffle-buffer", "0", hooks=HOOKS[:1], corpus=str(small))
        assert interp_main([*argv, "--epochs", "0"]) == 0
    steps = TOKENS // int(SAE_ARGS[SAE_ARGS.index("--batch-size") + 1])
    batch = int(SAE_ARGS[SAE_ARGS.index("--batch-size") + 1])
    assert json.loads((tmp_path / "c" / "cfg.json").read_text())["metadata"]["training_tokens"] == steps * batch
    assert json.loads((tmp_path / "c" / "train_config.json").read_text())["epochs"] is None


def test_streaming_under_torchrun_is_refused(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert interp_main(stream_args(model_dir, tmp_path / "run", hooks=HOOKS[:1])) == 2
    assert "runs in one process" in capsys.readouterr().err and not (tmp_path / "run").exists()


# --- hub sources, offline -----------------------------------------------------------------------
@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: the Hugging Face libraries in offline mode, a private hub cache, and any
    non-local socket connection refused."""
    import datasets
    import huggingface_hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    plain_connect = socket.socket.connect

    def local_only(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("/"):
            raise OSError(f"network disabled in this test (connect to {address})")
        return plain_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    return tmp_path / "hub"


def cache_gpt2(hub: Path, repo: str) -> None:
    """A small GPT-2 with our Shakespeare tokenizer, laid out as the hub cache holds a downloaded model."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = train_tokenizer(
        cut_at_line_breaks(Path(SHAKESPEARE).read_text()[:20_000]), vocab_size=300, show_progress=False
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            n_layer=1,
            n_embd=32,
            n_head=2,
            vocab_size=tokenizer.vocab_size,
            n_positions=CTX,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    folder = hub / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    model.save_pretrained(folder / "snapshots" / commit)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, eos_token="<|endoftext|>").save_pretrained(
        folder / "snapshots" / commit
    )
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


def test_hub_model_name_and_hub_dataset_stream_offline(offline, tmp_path, forward_windows):
    """A model name through TransformerBridge.boot_transformers (served from the hub cache) and an
    `hf:` dataset (a local dataset folder, streamed by `datasets`), with the network disabled."""
    cache_gpt2(offline, "stand-in/gpt2-tiny")
    texts = [piece for piece in cut_at_line_breaks(Path(SHAKESPEARE).read_text()[:60_000], 600)]
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "run"
    args = stream_args(
        "stand-in/gpt2-tiny",
        out,
        "--shuffle-buffer",
        "256",
        hooks=("blocks.0.mlp.hook_post",),
        corpus=f"hf:{tmp_path / 'dataset'}",
    )
    assert interp_main(args) == 0
    assert forward_windows == [1] + [4] * 10  # shuffle groups of 8 windows: all 40
    meta = json.loads((out / "cfg.json").read_text())
    assert meta["d_in"] == 128 and meta["metadata"]["model_name"] == "stand-in/gpt2-tiny"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["fvu"] < log[0]["fvu"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tokens": 0}, "--tokens and --forward-batch must be positive"),
        ({"forward_batch": -1}, "--tokens and --forward-batch must be positive"),
        ({"model_autocast": "fp8"}, "--model-autocast 'fp8' is not one of"),
    ],
)
def test_train_from_model_refuses_bad_arguments_before_loading_anything(tmp_path, overrides, message):
    from interp.activations.config import StreamConfig
    from sae.config import TrainConfig

    fields = {"tokens": 64, "forward_batch": 2, "model_autocast": "none", **overrides}
    cfg = StreamConfig(
        model=str(tmp_path / "no-model"), hooks=["blocks.0.hook_resid_post"], out=str(tmp_path / "out"), **fields
    )
    with pytest.raises(ValueError, match=message):
        interp.activations.stream.train_from_model(cfg, "topk", {"d_sae": [8], "k": [2]}, TrainConfig())
    assert not (tmp_path / "out").exists()
