"""Interventions (interp.interventions.intervene) and the ablation effects of the analysis: the spliced SAE with its
error term is the clean model bit for bit; ablation, clamping and scaling against a hand-built hook;
positions; generation; per-token log-prob changes."""

from __future__ import annotations

import pytest
import torch
from tiny_live import D_SAE, HOOK, N_CTX, tiny_opened

from interp.interventions.ablation import ablation_effects
from interp.interventions.intervene import (
    ablate,
    check_edits,
    clamp,
    clean_text,
    logprob_changes,
    scale,
    steered_text,
    steering,
)


@pytest.fixture(scope="module")
def opened():
    return tiny_opened()


@pytest.fixture
def tokens(opened):
    g = torch.Generator().manual_seed(5)
    t = torch.randint(1, 300, (3, 20), generator=g)
    t[:, 0] = opened.model.bos_id
    return t


def features_of(opened, tokens):
    """f [batch, pos, d_sae] and x [batch, pos, d_mlp] at the hook on the clean run."""
    _, cache = opened.model.bridge.run_with_cache(tokens, names_filter=lambda n: n == HOOK)
    x = cache[HOOK]
    return opened.sae.encode(x.reshape(-1, x.shape[-1])).view(*x.shape[:2], -1), x


def reference_logits(opened, tokens, delta_f):
    """Logits with the activation at the hook moved by delta_f [batch, pos, d_sae] @ W_dec, in float64
    (the meaning of an edit with the error term kept)."""
    W_dec = opened.sae.W_dec.detach().double()

    def move(act, hook):
        return (act.double() + delta_f.double() @ W_dec).to(act.dtype)

    with opened.model.bridge.hooks(fwd_hooks=[(HOOK, move)]):
        return opened.model.bridge(tokens)


def test_no_edit_is_the_clean_model_bit_for_bit(opened, tokens):
    clean = opened.model.bridge(tokens)
    with steering(opened, []) as model:
        spliced = model(tokens)
    assert torch.equal(spliced, clean)
    with steering(opened, [scale(list(range(D_SAE)), 1.0)]) as model:  # an edit that changes nothing
        assert torch.equal(model(tokens), clean)
    assert not torch.equal(opened.model.bridge(tokens), torch.zeros_like(clean))


def test_ablation_removes_exactly_what_the_feature_writes(opened, tokens):
    f, _ = features_of(opened, tokens)
    feature = int(torch.argmax((f > 0).sum((0, 1))))  # the feature firing most often here
    assert (f[..., feature] > 0).sum() >= 3
    delta = torch.zeros_like(f)
    delta[..., feature] = -f[..., feature]
    with steering(opened, [ablate(feature)]) as model:
        edited = model(tokens)
    reference = reference_logits(opened, tokens, delta)
    assert (edited - reference).abs().max() < 1e-4
    assert (edited - opened.model.bridge(tokens)).abs().max() > 1e-3  # it changed something


def test_clamp_and_scale_at_chosen_positions(opened, tokens):
    f, _ = features_of(opened, tokens)
    feature, positions = 7, (4, 9)
    delta = torch.zeros_like(f)
    delta[:, list(positions), feature] = 12.0 - f[:, list(positions), feature]
    with steering(opened, [clamp(feature, 12.0, positions=positions)]) as model:
        edited = model(tokens)
    assert (edited - reference_logits(opened, tokens, delta)).abs().max() < 1e-4
    clean = opened.model.bridge(tokens)
    assert torch.equal(edited[:, :4], clean[:, :4])  # causal: nothing before the first edited position moves
    assert (edited[:, 5:9] - clean[:, 5:9]).abs().max() > 1e-4  # the 2nd layer carries position 4 forward

    firing = int(torch.argmax((f > 0).sum((0, 1))))
    delta = torch.zeros_like(f)
    delta[..., firing] = 2.0 * f[..., firing]
    with steering(opened, [scale(firing, 3.0)]) as model:
        edited = model(tokens)
    assert (edited - reference_logits(opened, tokens, delta)).abs().max() < 1e-4


def test_edit_checks(opened):
    with pytest.raises(ValueError, match=r"out of range.*0\.\.95"):
        check_edits([clamp(D_SAE, 1.0)], D_SAE)
    with pytest.raises(ValueError, match="not finite"):
        check_edits([clamp(3, float("nan"))], D_SAE)
    with pytest.raises(ValueError, match="positions must be >= 0"):
        check_edits([ablate(3, positions=[-1])], D_SAE)
    with pytest.raises(ValueError, match="out of range"), steering(opened, [ablate(-1)]):
        pass


def test_logprob_changes_are_edited_minus_clean(opened, tokens):
    f, _ = features_of(opened, tokens)
    feature = int(torch.argmax((f > 0).sum((0, 1))))
    changes = logprob_changes(opened, tokens, [ablate(feature)])
    assert changes.shape == (3, 19)
    delta = torch.zeros_like(f)
    delta[..., feature] = -f[..., feature]
    ref = torch.log_softmax(reference_logits(opened, tokens, delta).double(), -1)
    clean = torch.log_softmax(opened.model.bridge(tokens).double(), -1)
    nxt = tokens[:, 1:, None]
    expected = (ref[:, :-1].gather(-1, nxt) - clean[:, :-1].gather(-1, nxt)).squeeze(-1)
    assert (changes.double() - expected).abs().max() < 1e-4
    assert changes.abs().max() > 1e-4
    assert torch.equal(logprob_changes(opened, tokens, []), torch.zeros_like(changes))


def test_generation_with_and_without_a_steer(opened):
    prompt = "def f3(x):\n"
    clean = clean_text(opened, prompt, 12)
    assert steered_text(opened, prompt, [], 12) == clean  # an empty steer is the clean model
    assert steered_text(opened, prompt, [], 12, temperature=1.0, seed=3) == clean_text(
        opened, prompt, 12, temperature=1.0, seed=3
    )
    steered = [steered_text(opened, prompt, [clamp(i, 40.0)], 12) for i in range(8)]
    assert any(text != clean for text in steered)
    assert steered_text(opened, prompt, [clamp(0, 40.0)], 12) == steered[0]  # greedy is deterministic


def test_ablation_effects_match_one_ablation_at_a_time(opened):
    g = torch.Generator().manual_seed(11)
    windows = torch.randint(1, 300, (6, N_CTX), generator=g)
    windows[:, 0] = opened.model.bos_id
    top_seq = torch.tensor([[0, 3, 5], [2, -1, -1], [1, 4, 0], [5, 5, -1]])
    top_pos = torch.tensor([[5, 30, 12], [31, 0, 0], [1, 17, 9], [3, 22, 0]])  # (1, 0) has no next token
    features = torch.tensor([10, 20, 30, 40])
    effects = ablation_effects(
        opened.model.bridge,
        opened.sae,
        HOOK,
        windows,
        _spread(top_seq, features),
        _spread(top_pos, features),
        examples=3,
        drops=5,
        batch_size=2,
    )
    change = effects["ablation_change"]
    for row, feature in enumerate(features.tolist()):
        deltas = []
        for k in range(3):
            s, p = int(top_seq[row, k]), int(top_pos[row, k])
            if s < 0 or p >= N_CTX - 1:
                assert torch.isnan(change[feature, k])
                continue
            window = windows[s : s + 1, : p + 2]
            expected = logprob_changes(opened, window, [ablate(feature)])[0, p]
            assert change[feature, k].item() == pytest.approx(expected.item(), abs=1e-4)
            clean = torch.log_softmax(opened.model.bridge(window)[0, p].double(), -1)
            with steering(opened, [ablate(feature)]) as model:
                deltas.append(torch.log_softmax(model(window)[0, p].double(), -1) - clean)
        if not deltas:
            assert (
                torch.isnan(effects["ablation_mean"][feature]) and (effects["ablation_drop_ids"][feature] == -1).all()
            )
            continue
        mean = torch.stack(deltas).mean(0)
        assert effects["ablation_mean"][feature].item() == pytest.approx(
            float(torch.nanmean(change[feature])), abs=1e-6
        )
        top = torch.topk(mean, 5, largest=False)
        assert effects["ablation_drop_values"][feature].double().tolist() == pytest.approx(
            top.values.tolist(), abs=1e-4
        )
    untouched = torch.ones(D_SAE, dtype=torch.bool)
    untouched[features] = False
    assert torch.isnan(effects["ablation_mean"][untouched]).all()
    assert (effects["ablation_drop_ids"][untouched] == -1).all()
    assert torch.isnan(change[features[1]]).all()  # its one example peaks on the window's last token


def _spread(rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """[n, K] rows placed at `features` of an [F, K] table filled with -1 (no example)."""
    out = torch.full((D_SAE, rows.shape[1]), -1, dtype=torch.long)
    out[features] = rows
    return out
