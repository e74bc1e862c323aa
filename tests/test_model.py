"""Models: a tiny native transformer trains (loss drops), saves and loads back bit-identical, keeps
its training record; a Hugging Face GPT-2 folder loads through the same loader; bad folders fail
with the missing file named; sampling and the CLI."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from interp.activations.hooks import hook_shapes
from interp.app.cli.main import main as interp_main
from interp.model.config import MODEL_TRAIN_TOKENS, STDLIB_PROMPT, ModelConfig, ModelTrainConfig
from interp.model.corpus import cut_at_line_breaks, load_corpus
from interp.model.record import RECORD_FILE, TENSORS_FILE, TrainingRecord
from interp.model.tokenizer import TOKENIZER_FILE, Tokenizer, train_tokenizer
from interp.model.training import default_prompt, evaluate, next_token_loss, train_model
from interp.model.transformer import CONFIG_FILE, WEIGHTS_FILE, build_native_model, generate, load_model, sample_text

SHAKESPEARE = "/work/shared/data/tinyshakespeare.txt"
TINY = ModelConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, context_length=32)
PROMPT = "KING RICHARD"


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    text = Path(SHAKESPEARE).read_text()[:100_000]
    tokenizer = train_tokenizer(cut_at_line_breaks(text), vocab_size=512, show_progress=False)
    return tokenizer.save(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer_file):
    """A tiny model trained for 24 steps of 8 x 32 tokens (6144 tokens) on tinyshakespeare."""
    out = tmp_path_factory.mktemp("model") / "tiny"
    cfg = ModelTrainConfig(
        corpus=SHAKESPEARE,
        tokens=6144,
        batch_size=8,
        lr=1e-2,
        warmup_steps=3,
        seed=0,
        tokenizer=str(tokenizer_file),
        eval_tokens=512,
        heldout_points=2,
        prompt=PROMPT,
        sample_tokens=8,
    )
    loaded = train_model(cfg, TINY, out, show_progress=False)
    return cfg, out, loaded


# ---- training ----------------------------------------------------------------------------


def test_tiny_model_loss_drops_on_shakespeare(trained):
    _, out, _ = trained
    record = TrainingRecord.load(out)
    losses = record.train_curve["loss"]
    assert len(losses) == 24
    assert losses[0] == pytest.approx(math.log(512), abs=0.5)  # near-uniform at initialisation
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    heldout = record.heldout_curve["loss"]
    assert heldout[-1] < heldout[0] - 1.0
    assert record.summary["heldout_loss"] == heldout[-1]


def test_schedule_is_warmup_then_cosine_known_answer(trained):
    cfg, out, _ = trained
    record = TrainingRecord.load(out)
    tokens_per_step = cfg.batch_size * TINY.context_length
    for step, lr in zip(record.train_curve["step"], record.train_curve["lr"]):
        progress = (step - 1) * tokens_per_step / cfg.tokens
        cosine = cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr == pytest.approx(cfg.lr * min(1.0, step / cfg.warmup_steps) * cosine, rel=1e-12)
    assert record.train_curve["tokens"][-1] == cfg.tokens == record.summary["tokens"]


def test_training_record_has_curves_samples_and_neuron_activations(trained, tokenizer_file):
    cfg, out, _ = trained
    body = json.loads((out / RECORD_FILE).read_text())
    for key in (
        "format",
        "format_version",
        "prompt",
        "prompt_token_strings",
        "config",
        "train_curve",
        "heldout_curve",
        "samples",
        "summary",
        "mlp_hook",
    ):
        assert key in body, key
    assert body["summary"].keys() >= {"steps", "tokens", "train_seconds", "tokens_per_second", "heldout_loss"}
    record = TrainingRecord.load(out)
    tokenizer = Tokenizer.load(tokenizer_file)
    heldout_steps = record.heldout_curve["step"]
    assert heldout_steps[0] == 0 and heldout_steps[-1] == 24 and heldout_steps == sorted(set(heldout_steps))
    assert len(heldout_steps) >= 2 + cfg.heldout_points
    steps = [s.step for s in record.samples]
    # one sample at the first step that reaches each story mark (marks reached on one step share it)
    expected = sorted({0, 24} | {math.ceil(mark * 24 - 1e-9) for mark in cfg.story_points})
    assert steps == expected
    assert all(isinstance(s.greedy, str) and isinstance(s.sampled, str) for s in record.samples)

    prompt_tokens = record.tensors["prompt_tokens"]
    assert prompt_tokens.tolist() == [tokenizer.bos_id, *tokenizer.encode(PROMPT)]
    assert record.prompt_token_strings[0] == "<|endoftext|>" and "".join(record.prompt_token_strings[1:]) == PROMPT
    init, final = record.tensors["mlp_post.init"], record.tensors["mlp_post.final"]
    assert init.shape == final.shape == (1, len(prompt_tokens), TINY.d_mlp)
    assert not torch.equal(init, final)

    # known answer: hook_post is gelu(fc_in(ln2(resid_mid))) of the initial / final weights
    def neuron_activations(model):
        captured = []
        handle = model.layers[0].mlp.fc_in.register_forward_hook(lambda m, i, o: captured.append(F.gelu(o)))
        with torch.no_grad():
            model(prompt_tokens[None])
        handle.remove()
        return captured[0]

    initial = build_native_model(ModelConfig(**{**TINY.__dict__, "d_vocab": 512, "seed": cfg.seed}))
    torch.testing.assert_close(init[0], neuron_activations(initial)[0], rtol=1e-5, atol=1e-6)
    from safetensors.torch import load_file

    initial.load_state_dict(load_file(str(out / WEIGHTS_FILE)))
    torch.testing.assert_close(final[0], neuron_activations(initial)[0], rtol=1e-5, atol=1e-6)


def test_evaluate_is_mean_next_token_cross_entropy_known_answer():
    """A 'model' whose logits are fixed: loss = -log softmax at the next token, averaged by hand."""
    torch.manual_seed(0)
    vocab, table = 7, torch.randn(7, 7, dtype=torch.float64)

    class Bigram(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(table.clone())

        def forward(self, ids):
            return self.table[ids]

    windows = torch.randint(0, vocab, (5, 9))
    expected = 0.0
    for row in windows.tolist():
        for a, b in zip(row[:-1], row[1:]):
            expected -= torch.log_softmax(table[a], -1)[b].item()
    expected /= windows.shape[0] * (windows.shape[1] - 1)
    assert evaluate(Bigram(), windows, batch_size=2) == pytest.approx(expected, rel=1e-6)
    assert next_token_loss(Bigram()(windows), windows).item() == pytest.approx(expected, rel=1e-6)


def test_minutes_budget_stops_on_the_training_clock(tmp_path, tokenizer_file):
    cfg = ModelTrainConfig(
        corpus=SHAKESPEARE,
        minutes=0.01,
        batch_size=2,
        tokenizer=str(tokenizer_file),
        eval_tokens=64,
        heldout_points=0,
        story_points=(),
        sample_tokens=2,
    )
    small = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, context_length=16)
    train_model(cfg, small, tmp_path / "m", show_progress=False)
    record = TrainingRecord.load(tmp_path / "m")
    clock = record.train_curve["seconds"]
    assert clock[-1] == record.summary["train_seconds"] >= 0.6  # stopped at the first step past 0.6 s
    assert len(clock) == 1 or clock[-2] < 0.6
    assert record.summary["tokens"] == record.summary["steps"] * 2 * 16


def test_default_prompt_is_fixed_per_corpus(tmp_path):
    assert default_prompt("stdlib", load_corpus("stdlib", "heldout")) == STDLIB_PROMPT
    path = tmp_path / "poem.txt"
    lines = [f"line {i} of a poem that goes on for a while\n" for i in range(5000)]
    path.write_text("".join(lines))
    heldout = load_corpus(str(path), "heldout")
    first = next(iter(heldout))
    prompt = default_prompt(str(path), heldout)  # 80 characters hold one whole 44-character line
    assert prompt == first.splitlines(keepends=True)[0] and prompt in lines


def test_budget_options_are_validated():
    with pytest.raises(ValueError, match="either tokens or minutes"):
        ModelTrainConfig(tokens=10, minutes=1.0).validate()
    with pytest.raises(ValueError, match="must be positive"):
        ModelTrainConfig(tokens=0).validate()
    with pytest.raises(ValueError, match=r"ModelTrainConfig.autocast must be one of \['auto', 'none', 'bfloat16'\]"):
        ModelTrainConfig(autocast="fp8").validate()
    assert ModelTrainConfig().budget() == (MODEL_TRAIN_TOKENS, None)  # budgets default to tokens, the same everywhere
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by n_heads \(4\)"):
        build_native_model(ModelConfig(d_model=30, n_heads=4))


# ---- save / load -------------------------------------------------------------------------


def test_saved_model_loads_back_bit_identical(trained):
    _, out, loaded_after_training = trained
    assert {p.name for p in out.iterdir()} >= {CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, RECORD_FILE, TENSORS_FILE}
    reloaded = load_model(out)
    assert reloaded.context_length == TINY.context_length and reloaded.bos_id == 0 and reloaded.name == "tiny"
    tokens = torch.randint(0, 512, (3, TINY.context_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded_after_training.bridge(tokens), reloaded.bridge(tokens))
    a = loaded_after_training.bridge.state_dict()
    b = reloaded.bridge.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["model"]["d_vocab"] == 512 and config["training"]["tokens"] == 6144


def test_hooks_of_our_model(trained):
    _, out, loaded = trained
    shapes = hook_shapes(loaded)
    assert shapes["blocks.0.mlp.hook_post"] == (1, TINY.context_length, TINY.d_mlp)
    assert shapes["blocks.0.hook_resid_post"] == (1, TINY.context_length, TINY.d_model)
    assert shapes["blocks.0.attn.hook_pattern"] == (1, TINY.n_heads, TINY.context_length, TINY.context_length)
    assert shapes["blocks.0.attn.hook_result"] is None  # needs use_attn_result


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, TOKENIZER_FILE])
def test_folder_missing_a_file_names_it_and_the_folder(trained, tmp_path, missing):
    copy = tmp_path / "broken"
    shutil.copytree(trained[1], copy)
    (copy / missing).unlink()
    with pytest.raises(FileNotFoundError, match=rf"model folder {copy} is missing {missing}"):
        load_model(copy)


def test_bad_model_specs_are_refused(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"model folder {tmp_path / 'empty'} has no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_model(tmp_path / "no-such-model")
    copy = tmp_path / "typo"
    shutil.copytree(trained[1], copy)
    config = json.loads((copy / CONFIG_FILE).read_text())
    config["model"]["d_modle"] = 3
    (copy / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['d_modle'\]"):
        load_model(copy)
    config["model"].pop("d_modle")
    config["format_version"] = 99
    (copy / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version 99"):
        load_model(copy)


# ---- Hugging Face checkpoints ------------------------------------------------------------


def test_hugging_face_gpt2_folder_loads_and_matches_transformers(tmp_path, tokenizer_file):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer.load(tokenizer_file)
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1, n_embd=64, n_head=2, vocab_size=tokenizer.vocab_size, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    hf_model = GPT2LMHeadModel(config).eval()
    hf_model.save_pretrained(tmp_path / "gpt2-tiny")
    hf_tokenizer.save_pretrained(tmp_path / "gpt2-tiny")

    loaded = load_model(tmp_path / "gpt2-tiny")
    assert loaded.context_length == 64 and loaded.bos_id == 0
    text = Path(SHAKESPEARE).read_text()[:400]
    tokens = torch.tensor([[loaded.bos_id, *loaded.tokenizer.encode(text)][:64]])
    reference = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2-tiny", attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.bridge(tokens), reference(tokens).logits, rtol=1e-4, atol=1e-5)
    shapes = hook_shapes(loaded)
    assert shapes["blocks.0.mlp.hook_post"] == (1, 64, 256)


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_a_model_name_goes_the_hugging_face_way(monkeypatch, offline):
    import interp.model.transformer as model_module

    calls = []
    monkeypatch.setattr(model_module, "_load_hugging_face", lambda name, device: calls.append((name, device)) or "hf")
    assert load_model("some-org/some-model") == "hf" and calls == [("some-org/some-model", None)]
    monkeypatch.undo()
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        ValueError, match=r"(?s)cannot load Hugging Face model name 'no-such-org/no-such-model'.*needs network access"
    ):
        load_model("no-such-org/no-such-model")


# ---- sampling ----------------------------------------------------------------------------


class Counter(torch.nn.Module):
    """Known-answer model: the next token is (last token + 1) mod 5 with probability ~1."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(30.0))

    def forward(self, ids):
        return self.scale * F.one_hot((ids + 1) % 5, 5).float()


def test_generate_greedy_and_seeded_sampling_known_answers():
    start = torch.tensor([3])
    assert generate(Counter(), start, 6, context_length=4).tolist() == [3, 4, 0, 1, 2, 3, 4]
    flat = Counter()
    flat.scale.data.fill_(0.0)  # uniform: samples depend only on the seed
    a = generate(flat, start, 20, context_length=4, temperature=1.0, seed=7)
    assert torch.equal(a, generate(flat, start, 20, context_length=4, temperature=1.0, seed=7))
    assert not torch.equal(a, generate(flat, start, 20, context_length=4, temperature=1.0, seed=8))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(flat, start, 1, context_length=4, temperature=-1.0)


def test_sample_text_continues_the_prompt(trained):
    _, _, loaded = trained
    text = sample_text(loaded.bridge, loaded.tokenizer, PROMPT, 10, context_length=loaded.context_length)
    assert isinstance(text, str) and text
    assert text == sample_text(loaded.bridge, loaded.tokenizer, PROMPT, 10, context_length=loaded.context_length)


# ---- command line ------------------------------------------------------------------------


def test_cli_train_sample_and_hooks(tmp_path, tokenizer_file, capsys):
    out = tmp_path / "cli-model"
    rc = interp_main(
        [
            "model",
            "train",
            "--corpus",
            SHAKESPEARE,
            "--out",
            str(out),
            "--tokens",
            "512",
            "--tokenizer",
            str(tokenizer_file),
            "--batch-size",
            "4",
            "--d-model",
            "16",
            "--n-heads",
            "2",
            "--d-mlp",
            "32",
            "--context-length",
            "16",
            "--eval-tokens",
            "64",
            "--heldout-points",
            "1",
            "--sample-tokens",
            "2",
            "--seed",
            "3",
        ]
    )
    assert rc == 0 and "held-out loss" in capsys.readouterr().out
    assert json.loads((out / CONFIG_FILE).read_text())["model"] == {
        "n_layers": 1,
        "d_model": 16,
        "n_heads": 2,
        "d_mlp": 32,
        "context_length": 16,
        "d_vocab": 512,
        "act_fn": "gelu",
        "normalization_type": "LN",
        "seed": 3,
    }

    assert (
        interp_main(
            [
                "model",
                "sample",
                "--model",
                str(out),
                "--prompt",
                "ROMEO:",
                "--tokens",
                "5",
                "--temperature",
                "0.7",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("ROMEO:")

    assert interp_main(["hooks", "--model", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "blocks.0.mlp.hook_post" in next(line for line in lines if "hook_post" in line)
    assert any(line.split() == ["blocks.0.mlp.hook_post", "[1,", "16,", "32]"] for line in lines)

    assert interp_main(["hooks", "--model", str(tmp_path / "nothing-here")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert interp_main(["model", "train", "--out", str(out), "--tokens", "5", "--minutes", "1"]) == 2
    assert "give either tokens or minutes as the training budget, not both" in capsys.readouterr().err


def test_outputs_are_checked_before_any_work(trained, tmp_path, capsys):
    """A file as --out, or a folder already holding a model, is refused at once (no tokenizer trained,
    nothing written); --overwrite replaces the model."""
    _, existing, _ = trained
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    argv = ["model", "train", "--corpus", "shakespeare", "--tokens", "64", "--batch-size", "2", "--eval-tokens", "64"]
    small = ["--vocab-size", "300", "--tokenizer-chars", "20000", "--d-model", "16", "--n-heads", "2", "--d-mlp", "16"]
    assert interp_main([*argv, "--out", str(a_file)]) == 2
    assert f"--out {a_file} is a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"

    before = {p.name: p.stat().st_mtime_ns for p in existing.iterdir()}
    assert interp_main([*argv, *small, "--out", str(existing)]) == 2
    assert "already holds a complete model; pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in existing.iterdir()} == before

    copy = tmp_path / "copy"
    shutil.copytree(existing, copy)
    assert interp_main([*argv, *small, "--context-length", "16", "--out", str(copy), "--overwrite"]) == 0
    assert json.loads((copy / CONFIG_FILE).read_text())["model"]["d_model"] == 16

    analyze = ["analyze", "--model", str(existing), "--sae", str(tmp_path), "--corpus", "shakespeare"]
    assert interp_main([*analyze, "--out", str(a_file)]) == 2
    assert f"--out {a_file} is a file, not a folder" in capsys.readouterr().err


def test_a_tokenizer_file_outside_the_model_folder_is_refused(trained, tmp_path):
    _, existing, _ = trained
    model = tmp_path / "model"
    shutil.copytree(existing, model)
    config = json.loads((model / CONFIG_FILE).read_text())
    config["tokenizer_file"] = "../../../../etc/passwd"
    (model / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="field 'tokenizer_file' is '../../../../etc/passwd', which points outside"):
        load_model(model)
