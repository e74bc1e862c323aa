"""The scorecard: exact concept ground truth, known-answer measures, a planted case neurons win, and
the command end to end on a tiny model (its windows are capture's, its JSON the contract)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from interp.features.scorecard.concepts import ConceptSuite, parse_user_concept, python_marks, text_marks
from interp.features.scorecard.measures import (
    detection,
    histogram,
    logit_consistency,
    max_correlation,
    sparse_probes,
    threshold_scores,
)
from interp.features.scorecard.score import compare, score_dictionary
from interp.model.corpus import labelled_token_sequences, load_corpus, token_sequences
from interp.model.tokenizer import train_tokenizer

SOURCE = '''"""Module doc."""
import os
from x import (a,
    b)

@dec(1)
def f(x=3, *a):
    """Doc é."""
    # note
    if x:
        y = f"v{x!r}" + 'q'
        for i in range(2):
            print([[i]])
    return len(a)
'''


def spans(marks: np.ndarray, text: str) -> list[str]:
    """The marked runs of characters."""
    out, i = [], 0
    while i < len(text):
        if marks[i]:
            j = i
            while j < len(text) and marks[j]:
                j += 1
            out.append(text[i:j])
            i = j
        else:
            i += 1
    return out


def test_python_concepts_mark_exactly_what_tokenize_and_ast_say():
    marks, complete = python_marks(SOURCE)
    assert complete
    got = {name.removeprefix("python."): spans(m, SOURCE) for name, m in marks.items()}
    assert got["string"] == ['"""Module doc."""', '"""Doc é."""', 'f"v{x!r}"', "'q'"]
    assert got["docstring"] == ['"""Module doc."""', '"""Doc é."""']  # é: ast's byte columns turned into characters
    assert got["f-string"] == ['f"v{x!r}"'] and got["comment"] == ["# note"]
    assert got["number"] == ["1", "3", "2"]
    assert got["keyword import"] == ["import", "import"] and got["keyword return"] == ["return"]
    assert got["keyword while"] == []
    assert got["builtin name"] == ["range", "print", "len"]
    assert got["bracket depth 2+"] == ["[[i]]"]  # brackets count as inside themselves
    assert "(a,\n    b)" in got["bracket depth 1+"] and "([[i]])" in got["bracket depth 1+"]
    assert got["indent 3+"] == ["            print([[i]])\n"]
    assert got["indent 1"] == ['    """Doc é."""\n    # note\n    if x:\n', "    return len(a)\n"]
    assert got["decorator line"] == ["@dec(1)\n"]
    assert got["import statement"] == ["import os\nfrom x import (a,\n    b)\n"]
    assert got["def/class header"] == ["def f(x=3, *a):\n"]
    assert got["first token of a line"] == ['"', "i", "f", "b", "@", "d", '"', "#", "i", "y", "f", "p", "r"]


def test_text_that_stops_tokenizing_keeps_its_marks_up_to_the_error():
    marks, complete = python_marks('x = 1\ns = """never closed\n')
    assert not complete and spans(marks["python.number"], "x = 1") == ["1"]


def test_text_concepts_and_user_regexes():
    text = "Go to SAE_2 (see (3)) now.\n  'it' ok"
    got = {name.removeprefix("text."): spans(m, text) for name, m in text_marks(text).items()}
    assert got["digits"] == ["2", "3"] and got["capitalised word"] == ["Go"]
    assert got["all-caps word"] == ["SAE_2"] and got["inside parentheses"] == ["(see (3))"]
    assert got["inside quotes"] == ["'it'"] and got["whitespace run"] == ["\n  "]
    assert got["line start"] == ["G", " "]
    suite = ConceptSuite(["text"], ["see=\\bsee\\b"])
    assert suite.names[-1] == "see" and spans(suite.char_marks(text)[-1], text) == ["see"]
    with pytest.raises(ValueError, match="--concept bad: '\\(' is not a valid regular expression"):
        parse_user_concept("bad=(")
    with pytest.raises(ValueError, match="matches the empty string"):
        parse_user_concept("empty=x*")
    with pytest.raises(ValueError, match="write NAME=REGEX"):
        parse_user_concept("noequals")


def test_a_token_is_positive_when_any_of_its_characters_is_marked():
    suite = ConceptSuite([], ["b=b"])
    labels = suite.token_labels("aab ba", [(0, 2), (2, 4), (4, 5), (5, 6), (4, 6)])
    assert labels[:, 0].tolist() == [False, True, True, False, True]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(itertools.islice(load_corpus("stdlib"), 60), vocab_size=400, show_progress=False)


def test_labelled_windows_are_the_windows_of_token_sequences(tokenizer):
    corpus = load_corpus("stdlib", "heldout")
    suite = ConceptSuite(["python", "text"])
    plain = list(itertools.islice(token_sequences(corpus, tokenizer, 32, seed=3), 40))
    labelled = list(itertools.islice(labelled_token_sequences(corpus, tokenizer, 32, suite.token_labels, seed=3), 40))
    assert all(torch.equal(a, b) for a, (b, _) in zip(plain, labelled, strict=True))
    for window, labels in labelled:
        assert labels.shape == (32, len(suite.names))
        assert not labels[(window == tokenizer.bos_id).numpy()].any()  # BOS carries no concept
    digits = suite.names.index("text.digits")
    strings = tokenizer.token_strings()
    for window, labels in labelled:
        for token, positive in zip(window.tolist(), labels[:, digits], strict=True):
            if token != tokenizer.bos_id and strings[token].isdigit():
                assert positive  # a token made of digits is inside a digit run


def brute_force(values: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """AUROC by counting pairs, and the best F1 over every threshold but the minimum, in float64."""
    pos, neg = values[labels].double(), values[~labels].double()
    auroc = ((pos[:, None] > neg).double().sum() + 0.5 * (pos[:, None] == neg).double().sum()) / (len(pos) * len(neg))
    best = max(
        (
            2 * float((values >= t)[labels].sum()) / float(labels.sum() + (values >= t).sum())
            for t in values.unique()[1:]
        ),
        default=math.nan,
    )
    return float(auroc), best


def test_detection_equals_the_brute_force_on_sparse_dense_and_tied_units():
    g = torch.Generator().manual_seed(7)
    N = 400
    acts = torch.randn(N, 8, generator=g).round(decimals=1)
    acts[:, :3] = acts[:, :3].relu()  # half zeros: the dense path
    acts[:, 3] = torch.where(torch.rand(N, generator=g) < 0.05, torch.rand(N, generator=g) + 0.5, 0.0)  # sparse path
    acts[:, 4] = torch.nn.functional.gelu(acts[:, 4])  # negatives below zero
    acts[:, 5] = 0.0  # never fires
    labels = torch.rand(N, 3, generator=g) < torch.tensor([0.1, 0.5, 0.03])
    got = detection(acts, labels, max_entries=60)  # small chunks: every path in several pieces
    for u in range(8):
        for c in range(3):
            auroc, f1 = brute_force(acts[:, u], labels[:, c])
            assert got["auroc"][u, c].item() == pytest.approx(auroc, abs=1e-12)
            if math.isnan(f1):
                assert math.isnan(got["f1"][u, c].item())
            else:
                assert got["f1"][u, c].item() == pytest.approx(f1, abs=1e-12)


def test_a_unit_equal_to_a_concept_scores_one_and_a_random_unit_about_a_half():
    g = torch.Generator().manual_seed(1)
    concept = torch.rand(20_000, generator=g) < 0.07
    acts = torch.stack(
        [concept.float() * (1 + torch.rand(20_000, generator=g)), torch.rand(20_000, generator=g), torch.zeros(20_000)],
        dim=1,
    )
    got = detection(acts, concept[:, None])
    assert got["auroc"][0, 0] == 1.0 and got["f1"][0, 0] == 1.0 and got["threshold"][0, 0] > 0
    assert abs(got["auroc"][1, 0].item() - 0.5) < 0.02  # a random unit: chance
    assert got["f1"][1, 0] < 0.2
    assert got["auroc"][2, 0] == 0.5  # constant: every pair tied
    assert math.isnan(got["f1"][2, 0].item())  # a unit that never changes detects nothing
    scores = threshold_scores(acts[:, 0], concept, 0.0, strict=True)
    assert (scores["precision"], scores["recall"], scores["fires"]) == (1.0, 1.0, int(concept.sum()))


def test_the_probe_finds_the_unit_that_carries_the_concept():
    g = torch.Generator().manual_seed(2)
    acts = torch.rand(6000, 20, generator=g)
    labels = (acts[:, 13] > 0.8)[:, None]
    acts[:, 13] += 0.05 * torch.randn(6000, generator=g)
    probes = sparse_probes(acts[:3000], labels[:3000], acts[3000:], labels[3000:], (1, 2))
    assert probes[1]["units"].tolist() == [[13]]
    assert probes[1]["accuracy"][0] > 0.95 and probes[1]["f1"][0] > 0.85
    assert 13 in probes[2]["units"][0].tolist()


def test_max_correlation_equals_numpy():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(500, 6, generator=g), torch.randn(500, 9, generator=g)
    b[:, 4] = 2 * a[:, 1] + 0.1 * torch.randn(500, generator=g)
    a[:, 5] = 1.0  # constant: no correlation
    got = max_correlation(a, b, chunk=2)
    full = np.corrcoef(a[:, :5].double().numpy().T, b.double().numpy().T)[:5, 5:]
    assert np.allclose(got[:5].numpy(), full.max(axis=1), atol=1e-5)
    assert got[1] > 0.99 and math.isnan(got[5].item())


def test_logit_consistency_counts_next_tokens_among_the_promoted():
    acts = torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    next_ids = torch.tensor([7, 8, 7, -1])  # the last token has no next token
    promoted = torch.tensor([[7, 1], [2, 3]])
    share = logit_consistency(acts, next_ids, promoted, examples=3)
    assert share[0].item() == pytest.approx(2 / 3) and math.isnan(share[1].item())


def test_histogram_stacks_by_membership_and_counts_zeros_apart():
    values = torch.tensor([0.0, 0.0, 1.0, 2.0, 4.0])
    labels = torch.tensor([True, False, True, False, True])
    h = histogram(values, labels, bins=3)
    assert h["edges"] == [1.0, 2.0, 3.0, 4.0]
    assert (h["positive"], h["negative"], h["zero_positive"], h["zero_negative"]) == ([1, 0, 1], [0, 1, 0], 1, 1)


def test_a_planted_case_where_neurons_equal_the_concept_shows_neurons_winning():
    """The scorecard can fail: when the neurons are the concepts and the features are noise, it says so."""
    g = torch.Generator().manual_seed(4)
    N, C = 4000, 3
    labels = torch.rand(N, C, generator=g) < 0.1
    neurons = torch.cat([labels.float() + 0.01 * torch.randn(N, C, generator=g), torch.randn(N, 5, generator=g)], 1)
    features = torch.rand(N, 40, generator=g) * (torch.rand(N, 40, generator=g) < 0.05)
    select = torch.arange(N) < N // 2
    rows = {
        side: score_dictionary(acts, labels, select, ~select, min_positives=5)
        for side, acts in (("features", features), ("neurons", neurons))
    }
    summary = compare(rows)
    assert summary["wins"]["features vs neurons"]["f1"] == {"features": 0, "neurons": 3, "ties": 0}
    assert all(r["best"]["id"] == c and r["best"]["f1"] > 0.99 for c, r in enumerate(rows["neurons"]))
    assert summary["median"]["neurons"]["f1"] > 0.99 > 0.5 > summary["median"]["features"]["f1"]


def test_shakespeare_concepts_read_the_layout_of_the_plays():
    from interp.features.scorecard.concepts import shakespeare_marks

    text = "KING RICHARD III:\nThou art the king, and thy crown liveth.\n\nFirst Citizen:\nSpeak, speak.\n"
    got = {name.removeprefix("shakespeare."): spans(m, text) for name, m in shakespeare_marks(text).items()}
    assert got["speaker line"] == ["KING RICHARD III:", "First Citizen:"]
    assert got["verse line start"] == ["T", "S"]
    assert got["thou/thee/thy/thine"] == ["Thou", "thy"] and got["-eth/-est word"] == ["liveth"]
    assert ConceptSuite(["shakespeare", "text"]).names[0] == "shakespeare.verse line start"
