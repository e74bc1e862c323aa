"""The one splice of a dictionary into a model (interp.interventions.splice) and the CE / KL metrics of
interp.interventions.evaluate."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from interp.activations.hooks import sae_hook_name
from interp.interventions.evaluate import (
    SpliceMetrics,
    evaluate_splice,
    kl_from_clean,
    next_token_cross_entropy,
    next_token_log_probs,
    spliced_runs,
)
from interp.interventions.splice import Splice, spliced
from interp.model.corpus import batched_windows
from sae.architectures import build_sae

D_MODEL, D_MLP, D_VOCAB, N_CTX = 64, 128, 300, 32
RESID = "blocks.0.hook_resid_post"
MLP_POST = "blocks.0.mlp.hook_post"


@pytest.fixture(scope="module")
def bridge():
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
    from transformer_lens.model_bridge.bridge import TransformerBridge

    model = TransformerBridge.boot_native(
        dict(
            d_model=D_MODEL,
            d_head=16,
            n_layers=1,
            n_ctx=N_CTX,
            n_heads=4,
            d_vocab=D_VOCAB,
            d_mlp=D_MLP,
            act_fn="gelu",
            seed=0,
            normalization_type="LN",
        )
    )
    return model.eval()


def run_with(bridge, tokens, sae, hook, **options):
    """Logits of one pass with `sae` spliced in at `hook` (None: zero-ablated)."""
    with spliced(bridge, sae, at=hook, **options):
        return bridge(tokens)


@pytest.fixture
def tokens():
    return torch.randint(0, D_VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))


def identity_sae(d: int):
    """A relu SAE that is exactly the identity: f = [relu(x), relu(-x)], x_hat = relu(x) - relu(-x)."""
    sae = build_sae("relu", d_in=d, d_sae=2 * d)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def zero_sae(d: int):
    """A relu SAE whose reconstruction is 0 for every input (zero decoder and bias)."""
    sae = build_sae("relu", d_in=d, d_sae=d)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    return sae


# --- CE and KL on hand-computed cases --------------------------------------------------------------


def test_cross_entropy_and_kl_hand_computed():
    ln2 = math.log(2)
    # batch 1, 3 positions, vocab 3; the last position predicts nothing
    clean = torch.tensor([[[0.0, 0.0, 0.0], [ln2, 0.0, 0.0], [5.0, -1.0, 2.0]]], dtype=torch.float64)
    other = torch.tensor([[[ln2, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    tokens = torch.tensor([[2, 0, 1]])  # position 0 predicts 0, position 1 predicts 1
    clean_lp, other_lp = next_token_log_probs(clean), next_token_log_probs(other)
    ce = next_token_cross_entropy(clean_lp, tokens)
    # clean: position 0 uniform -> ln 3; position 1 probabilities [1/2, 1/4, 1/4], target 1 -> ln 4
    assert ce[0].tolist() == pytest.approx([math.log(3), math.log(4)], abs=1e-12)
    assert next_token_cross_entropy(other_lp, tokens)[0].tolist() == pytest.approx(
        [math.log(2), math.log(3)], abs=1e-12
    )
    kl = kl_from_clean(clean_lp, other_lp)
    # position 0: KL(uniform || [1/2, 1/4, 1/4]) = 1/3 ln(2/3) + 2/3 ln(4/3)
    # position 1: KL([1/2, 1/4, 1/4] || uniform) = 1/2 ln(3/2) + 1/2 ln(3/4)
    expected = [1 / 3 * math.log(2 / 3) + 2 / 3 * math.log(4 / 3), 0.5 * math.log(3 / 2) + 0.5 * math.log(3 / 4)]
    assert kl[0].tolist() == pytest.approx(expected, abs=1e-12)
    assert kl_from_clean(clean_lp, clean_lp).abs().max() < 1e-15


def test_splice_metrics_ratios_by_hand():
    ln2 = math.log(2)
    tokens = torch.tensor([[0, 0]])  # one prediction: token 0 after position 0
    clean = torch.tensor([[[2 * ln2, 0.0], [0.0, 0.0]]], dtype=torch.float64)  # P(0) = 4/5
    sae = torch.tensor([[[ln2, 0.0], [0.0, 0.0]]], dtype=torch.float64)  # P(0) = 2/3
    ablated = torch.zeros(1, 2, 2, dtype=torch.float64)  # P(0) = 1/2
    metrics = SpliceMetrics()
    metrics.update(tokens, clean, sae, ablated)
    result = metrics.compute()
    ce_clean, ce_sae, ce_abl = -math.log(4 / 5), -math.log(2 / 3), -math.log(1 / 2)
    kl_sae = 0.8 * math.log(0.8 / (2 / 3)) + 0.2 * math.log(0.2 / (1 / 3))
    kl_abl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert result["ce_clean"] == pytest.approx(ce_clean, abs=1e-12)
    assert result["ce_loss_recovered"] == pytest.approx((ce_abl - ce_sae) / (ce_abl - ce_clean), abs=1e-12)
    assert result["delta_ce"] == pytest.approx(ce_sae - ce_clean, abs=1e-12)
    assert result["kl_score"] == pytest.approx((kl_abl - kl_sae) / kl_abl, abs=1e-12)
    assert result["num_predictions"] == 1


def test_splice_metrics_stream_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 7, (5, 6), generator=g)
    clean, sae, ablated = (torch.randn(5, 6, 7, generator=g) for _ in range(3))
    one = SpliceMetrics()
    one.update(tokens, clean, sae, ablated)
    streamed = SpliceMetrics()
    for rows in ([0, 1], [2], [3, 4]):
        streamed.update(tokens[rows], clean[rows], sae[rows], ablated[rows])
    a, b = one.compute(), streamed.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-12, abs=1e-12), key
    # the one-shot value from its definition, in float64
    clean_lp = torch.log_softmax(clean[:, :-1].double(), -1)
    sae_lp = torch.log_softmax(sae[:, :-1].double(), -1)
    abl_lp = torch.log_softmax(ablated[:, :-1].double(), -1)
    target = tokens[:, 1:, None]
    ce = [-lp.gather(-1, target).mean().item() for lp in (clean_lp, sae_lp, abl_lp)]
    assert a["ce_loss_recovered"] == pytest.approx((ce[2] - ce[1]) / (ce[2] - ce[0]), rel=1e-12)
    kl_sae = (clean_lp.exp() * (clean_lp - sae_lp)).sum(-1).mean().item()
    kl_abl = (clean_lp.exp() * (clean_lp - abl_lp)).sum(-1).mean().item()
    assert a["kl_score"] == pytest.approx((kl_abl - kl_sae) / kl_abl, rel=1e-12)


def test_batched_windows_limits_and_keeps_the_tail():
    windows = [torch.full((4,), i) for i in range(7)]
    batches = list(batched_windows(iter(windows), 3, max_windows=5))
    assert [b.shape[0] for b in batches] == [3, 2]
    assert batches[1][:, 0].tolist() == [3, 4]


# --- splicing into a model ---------------------------------------------------------------------------


@pytest.mark.parametrize("hook, d", [(RESID, D_MODEL), (MLP_POST, D_MLP)])
def test_identity_sae_recovers_everything(bridge, tokens, hook, d):
    result = evaluate_splice(bridge, identity_sae(d), hook, [tokens[:2], tokens[2:]], progress=False)
    assert abs(result["ce_zero_ablation"] - result["ce_clean"]) > 1e-3  # the hook matters at all
    assert result["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-9)
    assert result["kl_score"] == pytest.approx(1.0, abs=1e-9)
    assert abs(result["delta_ce"]) < 1e-9 and result["kl_sae"] < 1e-9
    assert result["fvu"] < 1e-12 and result["explained_variance"] == pytest.approx(1.0, abs=1e-12)
    assert result["num_tokens"] == tokens.numel()
    assert result["num_predictions"] == tokens.shape[0] * (tokens.shape[1] - 1)


@pytest.mark.parametrize("hook, d", [(RESID, D_MODEL), (MLP_POST, D_MLP)])
def test_zero_sae_recovers_nothing(bridge, tokens, hook, d):
    result = evaluate_splice(bridge, zero_sae(d), hook, [tokens], progress=False)
    assert result["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert result["kl_score"] == pytest.approx(0.0, abs=1e-9)
    assert result["ce_sae"] == pytest.approx(result["ce_zero_ablation"], abs=1e-9)
    assert result["fvu"] > 0.5


def test_error_term_reproduces_clean_logits(bridge, tokens):
    torch.manual_seed(0)
    sae = build_sae("topk", d_in=D_MODEL, d_sae=256, k=8)  # untrained: a poor reconstruction
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(D_MODEL))
    with torch.no_grad():
        clean = bridge(tokens)
        with_sae = run_with(bridge, tokens, sae, RESID)
        with_error = run_with(bridge, tokens, sae, RESID, with_error=True)
        ablated = run_with(bridge, tokens, None, RESID)
    assert (with_sae - clean).abs().max() > 1e-2  # the reconstruction alone changes the output
    assert (ablated - clean).abs().max() > 1e-2
    assert (with_error - clean).abs().max() <= 1e-5
    # the spliced run through spliced_runs is the same computation as the splice alone
    runs = spliced_runs(bridge, tokens, sae, RESID)
    assert torch.allclose(runs.sae, with_sae, atol=1e-6) and torch.allclose(runs.clean, clean, atol=1e-6)
    assert runs.record.x.shape == (tokens.numel(), D_MODEL) and runs.record.f.shape == (tokens.numel(), 256)


def test_splice_hooks_are_removed_after_the_run(bridge, tokens):
    with torch.no_grad():
        before = bridge(tokens)
        run_with(bridge, tokens, zero_sae(D_MODEL), RESID)
        after = bridge(tokens)
    assert torch.equal(before, after)


def test_the_splice_turns_on_the_settings_its_hooks_need_and_restores_them(bridge, tokens):
    """blocks.0.hook_mlp_in fires only with use_hook_mlp_in; the splice turns it on for its block only."""
    hook = "blocks.0.hook_mlp_in"
    assert not bridge.cfg.use_hook_mlp_in
    with torch.no_grad():
        clean = bridge(tokens)
        with spliced(bridge, identity_sae(D_MODEL), at=hook, record=True) as splice:
            assert bridge.cfg.use_hook_mlp_in
            through = bridge(tokens)
    assert splice.last is not None and splice.last.x.shape == (tokens.numel(), D_MODEL)
    assert not bridge.cfg.use_hook_mlp_in  # the model is left as it was found
    torch.testing.assert_close(through, clean, atol=1e-5, rtol=0)  # the identity SAE changes nothing


def test_a_dictionary_that_reads_one_hook_and_writes_another(bridge, tokens):
    """A planted transcoder: its features are the MLP's input rows (relu of +x and -x), its decoder a fixed
    random map to the MLP's output width. The splice must encode what it read at the input hook, write the
    prediction at the output hook, record the clean output as x, and (with the error term) change nothing."""
    reads, writes = "blocks.0.ln2.hook_out", "blocks.0.hook_mlp_out"
    transcoder = identity_sae(D_MODEL)
    out_map = torch.randn(D_MODEL, D_MODEL, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        transcoder.W_dec.copy_(torch.cat([out_map, -out_map]).float())
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens)
        with spliced(bridge, transcoder, at=reads, writes=writes, record=True) as splice:
            replaced = bridge(tokens)
        with spliced(bridge, transcoder, at=reads, writes=writes, with_error=True):
            exact = bridge(tokens)
        clean = bridge(tokens)
    source = cache[reads].reshape(-1, D_MODEL).double()
    record = splice.last
    torch.testing.assert_close(record.source.double(), source)
    torch.testing.assert_close(record.x.double(), cache[writes].reshape(-1, D_MODEL).double())
    torch.testing.assert_close(record.x_hat.double(), source @ out_map, atol=1e-4, rtol=1e-4)
    assert (replaced - clean).abs().max() > 1e-2
    assert torch.equal(exact, clean)


def test_a_dictionary_that_would_write_before_it_reads_is_refused(bridge, tokens):
    backwards = spliced(bridge, identity_sae(D_MODEL), at="blocks.0.hook_mlp_out", writes="blocks.0.ln2.hook_out")
    message = r"'blocks\.0\.ln2\.hook_out' fired before 'blocks\.0\.hook_mlp_out'"
    with pytest.raises(ValueError, match=message), torch.no_grad(), backwards:
        bridge(tokens)


def test_a_dictionary_must_match_the_width_of_the_hook_it_writes(bridge, tokens):
    wide = build_sae("topk", d_in=D_MODEL, d_sae=32, k=4)
    wide.cfg.d_out = D_MLP + 1  # reads the MLP's input (64 wide), claims to write 129 values per token
    message = r"d_out=129.*blocks\.0\.mlp\.hook_post.*per-token size 128"
    splice = spliced(bridge, wide, at="blocks.0.ln2.hook_out", writes=MLP_POST)
    with pytest.raises(ValueError, match=message), torch.no_grad(), splice:
        bridge(tokens)


def test_error_term_keeps_the_gradient_through_the_reconstruction(bridge, tokens):
    sae = build_sae("relu", d_in=D_MODEL, d_sae=96)
    logits = run_with(bridge, tokens, sae, RESID, with_error=True)
    logits.logsumexp(-1).sum().backward()
    assert sae.W_dec.grad is not None and sae.W_dec.grad.abs().sum() > 0


def test_wrong_width_names_the_hook_and_both_sizes(bridge, tokens):
    sae = build_sae("topk", d_in=D_MODEL + 1, d_sae=32, k=4)
    with pytest.raises(ValueError, match=r"d_in=65.*blocks\.0\.hook_resid_post.*per-token size 64"), torch.no_grad():
        run_with(bridge, tokens, sae, RESID)
    splice = Splice(sae, MLP_POST, MLP_POST)
    with pytest.raises(ValueError, match=r"d_in=65.*blocks\.0\.mlp\.hook_post.*128"):
        splice.write(torch.randn(2, 3, D_MLP))


def test_unknown_hook_is_refused_with_the_valid_names(bridge, tokens):
    with pytest.raises(ValueError, match=r"unknown hook name 'blocks\.0\.hook_resid_pots'.*did you mean"):
        run_with(bridge, tokens, identity_sae(D_MODEL), "blocks.0.hook_resid_pots")


def test_hook_name_comes_from_the_sae_metadata():
    sae = identity_sae(4)
    assert sae_hook_name(sae, "blocks.0.hook_mlp_out") == "blocks.0.hook_mlp_out"
    with pytest.raises(ValueError, match="metadata.hook_name.*--hook"):
        sae_hook_name(sae, None)
    sae.metadata = {"hook_name": RESID}
    assert sae_hook_name(sae, None) == RESID


# --- `interp eval` end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A saved native model (random weights) whose training record names a small JSONL corpus."""
    from interp.model.config import ModelConfig
    from interp.model.tokenizer import train_tokenizer
    from interp.model.transformer import build_native_model, save_model

    root = tmp_path_factory.mktemp("eval")
    text = root / "corpus.jsonl"
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "a",
        "mat",
        "while",
        "dogs",
        "ran",
        "far",
        "and",
        "wide",
        "under",
        "blue",
        "skies",
    ]
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (60,), generator=g)) for _ in range(60)]
    text.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    tokenizer = train_tokenizer(lines, vocab_size=280, show_progress=False)
    cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, context_length=16, d_vocab=300, seed=0)
    return save_model(build_native_model(cfg), cfg, tokenizer, root / "model", training={"corpus": str(text)})


def test_interp_eval_cli_on_a_saved_model_and_sae(model_folder, tmp_path, capsys):
    from interp.app.cli.main import main
    from sae.io import save_sae

    sae = identity_sae(32)
    sae.metadata = {"hook_name": RESID}
    save_sae(sae, tmp_path / "sae")
    out = tmp_path / "eval.json"
    code = main(
        [
            "eval",
            "--model",
            str(model_folder),
            "--sae",
            str(tmp_path / "sae"),
            "--tokens",
            "64",
            "--batch-size",
            "2",
            "--json",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["hook_name"] == RESID and result["split"] == "heldout"
    assert result["corpus"].endswith("corpus.jsonl")  # the corpus the model folder records
    assert result["num_tokens"] == 64 and result["num_predictions"] == 4 * 15
    assert result["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-9)
    assert result["kl_score"] == pytest.approx(1.0, abs=1e-9)
    assert result["fvu"] < 1e-12
    assert "ce_loss_recovered" in capsys.readouterr().out


def test_interp_eval_cli_refuses_an_sae_of_another_width(model_folder, tmp_path, capsys):
    from interp.app.cli.main import main
    from sae.io import save_sae

    save_sae(build_sae("topk", d_in=48, d_sae=64, k=4), tmp_path / "sae")
    code = main(
        ["eval", "--model", str(model_folder), "--sae", str(tmp_path / "sae"), "--hook", RESID, "--tokens", "32"]
    )
    assert code == 2
    assert re.search(r"d_in=48.*blocks\.0\.hook_resid_post.*per-token size 32", capsys.readouterr().err)
