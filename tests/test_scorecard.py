"""The scorecard's ground truth and measures: exact concept marks, labelled windows, correlations, logit
consistency and histograms (the cross-fitted scoring is in test_scorecard_crossfit)."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch

from interp.features.scorecard.concepts import ConceptSuite, parse_user_concept, python_marks, text_marks
from interp.features.scorecard.measures import histogram, logit_consistency, max_correlation
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


def test_shakespeare_concepts_read_the_layout_of_the_plays():
    from interp.features.scorecard.concepts import shakespeare_marks

    text = "KING RICHARD III:\nThou art the king, and thy crown liveth.\n\nFirst Citizen:\nSpeak, speak.\n"
    got = {name.removeprefix("shakespeare."): spans(m, text) for name, m in shakespeare_marks(text).items()}
    assert got["speaker line"] == ["KING RICHARD III:", "First Citizen:"]
    assert got["verse line start"] == ["T", "S"]
    assert got["thou/thee/thy/thine"] == ["Thou", "thy"] and got["-eth/-est word"] == ["liveth"]
    assert ConceptSuite(["shakespeare", "text"]).names[0] == "shakespeare.verse line start"


def test_the_mix_corpus_marks_each_characters_source_exactly():
    from interp.model.mix import MIX_SOURCES, mix_documents, source_marks

    documents = mix_documents()
    assert len(documents) > 100 and documents == mix_documents()
    hex_line, base64_line = re.compile(r"[0-9a-f]{1,64}\n"), re.compile(r"[A-Za-z0-9+/=]{1,76}\n")
    seen = set()
    for text, spans in documents[:40]:
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        marks = source_marks(text)
        assert sum(m.astype(int) for m in marks.values()).tolist() == [1] * len(text)  # one source per character
        for start, end, source in spans:
            seen.add(source)
            assert marks[f"mix.{source}"][start:end].all()
            piece = text[start:end]
            if source == "hex":
                assert all(hex_line.fullmatch(line) for line in piece.splitlines(keepends=True))
            if source == "base64":
                assert all(base64_line.fullmatch(line) for line in piece.splitlines(keepends=True))
    assert seen == set(MIX_SOURCES)
    assert not any(m.any() for m in source_marks("not a mix document").values())
    suite = ConceptSuite(["mix"])
    assert suite.names == [f"mix.{s}" for s in MIX_SOURCES]


def test_a_regex_that_backtracks_without_end_is_named_not_left_to_hang():
    import time

    suite = ConceptSuite([], ["w=(\\w+)+!"], regex_seconds=0.5)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"--concept w: .* took more than 0.5 s on one document"):
        suite.char_marks("a" * 40 + "\n")
    assert time.perf_counter() - start < 10
    assert ConceptSuite([], ["b=b"]).char_marks("abc")[0].tolist() == [False, True, False]
