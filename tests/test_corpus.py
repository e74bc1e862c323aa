"""Corpora: the stdlib default and its fixed split, files/globs/JSONL/HF by spec, packing."""

import itertools
import json
import random
import sysconfig
from pathlib import Path

import pytest
import torch

from interp.model.builtin import shakespeare_file, stdlib_files
from interp.model.config import SHAKESPEARE_PROMPT
from interp.model.corpus import (
    HELDOUT_EVERY,
    TEXT_PIECE_CHARS,
    cut_at_line_breaks,
    load_corpus,
    shuffled,
    token_sequences,
)
from interp.model.training import default_prompt

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
if not SHAKESPEARE.exists():
    SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")


class LetterTokenizer:
    """Known-answer tokenizer: character c -> ord(c); BOS = 0 (no document contains NUL)."""

    bos_id = 0

    def encode_batch(self, texts):
        return [[ord(c) for c in t] for t in texts]


# ---- stdlib ------------------------------------------------------------------------------


def test_stdlib_files_are_library_source_in_sorted_order():
    files = stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    assert len(files) > 100 and files == sorted(files)
    assert all(f.suffix == ".py" and f.is_relative_to(root) for f in files)
    for f in files:
        parts = set(f.relative_to(root).parts[:-1])
        assert not parts & {"site-packages", "dist-packages", "test", "tests", "idle_test"}, f
    assert root / "json" / "decoder.py" in files


def test_stdlib_split_is_fixed_disjoint_and_complete():
    everything = list(load_corpus("stdlib", "all"))
    train = list(load_corpus("stdlib", "train"))
    heldout = list(load_corpus("stdlib", "heldout"))
    assert heldout == everything[HELDOUT_EVERY - 1 :: HELDOUT_EVERY]
    assert train == [d for i, d in enumerate(everything) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    assert len(train) + len(heldout) == len(everything)
    assert list(load_corpus("stdlib", "heldout")) == heldout  # deterministic across loads
    assert all(isinstance(d, str) and d for d in everything)


def test_unknown_split_and_bad_heldout_every_are_refused():
    with pytest.raises(ValueError, match="unknown corpus split 'test'"):
        load_corpus("stdlib", "test")
    with pytest.raises(ValueError, match="heldout_every"):
        load_corpus("stdlib", heldout_every=1)


# ---- paths -------------------------------------------------------------------------------


def test_text_file_is_read_as_pieces_cut_at_line_breaks():
    text = SHAKESPEARE.read_text()
    pieces = list(load_corpus(str(SHAKESPEARE), "all"))
    assert "".join(pieces) == text
    assert all(len(p) <= TEXT_PIECE_CHARS for p in pieces)
    assert all(p.endswith("\n") for p in pieces[:-1])
    assert len(pieces) > HELDOUT_EVERY  # a single file still has a held-out part
    assert list(load_corpus(str(SHAKESPEARE), "heldout")) == pieces[HELDOUT_EVERY - 1 :: HELDOUT_EVERY]


def test_cut_at_line_breaks_known_answer():
    assert list(cut_at_line_breaks("ab\ncd\nef", max_chars=4)) == ["ab\n", "cd\n", "ef"]
    assert list(cut_at_line_breaks("abcdefghij", max_chars=4)) == ["abcd", "efgh", "ij"]  # one long line
    assert list(cut_at_line_breaks("", max_chars=4)) == []


def test_glob_folder_and_jsonl(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.txt").write_text("first file\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jsonl").write_text(
        json.dumps({"text": "record one", "id": 1}) + "\n\n" + json.dumps({"text": "record two"}) + "\n"
    )
    (tmp_path / ".hidden").write_text("not part of the corpus\n")
    assert list(load_corpus(str(tmp_path / "*.txt"), "all")) == ["first file\n", "second file\n"]
    assert list(load_corpus(str(tmp_path / "**" / "*.jsonl"), "all")) == ["record one", "record two"]
    assert list(load_corpus(str(tmp_path), "all")) == ["first file\n", "second file\n", "record one", "record two"]
    assert list(load_corpus(str(tmp_path / "sub" / "c.jsonl"), "all", text_field="text")) == [
        "record one",
        "record two",
    ]


def test_jsonl_record_without_text_names_file_and_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text here"}) + "\n")
    with pytest.raises(ValueError, match=r"docs.jsonl:2: record has no string field 'text' \(found \['body'\]\)"):
        list(load_corpus(str(path), "all"))
    path.write_text(json.dumps({"text": "fine"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"docs.jsonl:2: not valid JSON"):
        list(load_corpus(str(path), "all"))


def test_missing_empty_and_unreadable_corpora_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-file.txt"):
        load_corpus(str(tmp_path / "no-such-file.txt"))
    with pytest.raises(FileNotFoundError, match=r"matches no files"):
        load_corpus(str(tmp_path / "*.nothing"))
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(FileNotFoundError, match="empty-dir holds no files"):
        load_corpus(str(tmp_path / "empty-dir"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty.txt.*has no documents"):
        list(load_corpus(str(empty)))
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text \(byte 3"):
        list(load_corpus(str(binary), "all"))


def test_a_corpus_too_small_for_a_heldout_part_says_so(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("only one short document\n")
    assert list(load_corpus(str(path))) == ["only one short document\n"]
    with pytest.raises(ValueError, match=r"short.txt' \(split 'heldout'\) has no documents: its source gave 1"):
        list(load_corpus(str(path), "heldout"))


# ---- Hugging Face datasets (a local folder stands in for the hub, offline) -----------------


@pytest.fixture
def offline(monkeypatch):
    import datasets
    import huggingface_hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)


def test_hf_dataset_streams_records_and_splits(tmp_path, offline):
    texts = [f"record {i}: " + "".join(random.Random(i).choices("abc xyz", k=30)) for i in range(45)]
    folder = tmp_path / "local-dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    assert list(load_corpus(f"hf:{folder}", "all")) == texts
    assert list(load_corpus(f"hf:{folder}::train", "heldout")) == texts[HELDOUT_EVERY - 1 :: HELDOUT_EVERY]
    with pytest.raises(ValueError, match=r"record 0 has no string field 'body'"):
        list(load_corpus(f"hf:{folder}", "all", text_field="body"))


def test_hf_dataset_name_offline_gives_a_clear_error(offline):
    with pytest.raises(ValueError, match=r"cannot open Hugging Face dataset 'no-such-org/no-such-dataset'.*network"):
        load_corpus("hf:no-such-org/no-such-dataset")
    with pytest.raises(ValueError, match=r"must look like hf:NAME"):
        load_corpus("hf:")


# ---- packing -----------------------------------------------------------------------------


def test_shuffled_is_a_seeded_permutation_even_with_a_small_buffer():
    items = [str(i) for i in range(100)]
    for buffer in (7, 1000):
        a = list(shuffled(items, seed=3, buffer_size=buffer))
        assert sorted(a, key=int) == items and a != items
        assert a == list(shuffled(items, seed=3, buffer_size=buffer))
        assert a != list(shuffled(items, seed=4, buffer_size=buffer))


def _letter_documents(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [chr(ord("A") + i) * rng.randint(1, 90) for i in range(n)]


@pytest.mark.parametrize("ctx", [16, 37])
def test_packing_known_answer(ctx):
    """Documents of one distinct letter each: windows start with BOS, a letter changes only after
    BOS, and the letters laid end to end are the documents in the seeded shuffled order."""
    docs = _letter_documents(40, seed=ctx)
    windows = list(token_sequences(docs, LetterTokenizer(), ctx, seed=5))
    assert windows and all(w.shape == (ctx,) and w.dtype == torch.long and w[0] == 0 for w in windows)
    for w in windows:
        for prev, cur in zip(w[:-1].tolist(), w[1:].tolist()):
            assert not (prev != 0 and cur != 0 and prev != cur), "documents must be separated by BOS"
    letters = [t for w in windows for t in w.tolist() if t != 0]
    runs = [chr(k) * len(list(g)) for k, g in itertools.groupby(letters)]
    expected = list(shuffled(docs, seed=5 * 1_000_003, buffer_size=4096))
    assert runs[:-1] == expected[: len(runs) - 1]  # the last run may be cut by the dropped partial window
    assert expected[len(runs) - 1].startswith(runs[-1])
    total = sum(len(d) + 1 for d in docs)  # each document plus its BOS
    assert len(windows) >= (total - ctx) // ctx  # nothing but the final partial window is lost


def test_packing_is_reproducible_by_seed_and_differs_across_seeds():
    docs = _letter_documents(60, seed=0)
    a = torch.stack(list(token_sequences(docs, LetterTokenizer(), 32, seed=1)))
    b = torch.stack(list(token_sequences(docs, LetterTokenizer(), 32, seed=1)))
    c = torch.stack(list(token_sequences(docs, LetterTokenizer(), 32, seed=2)))
    assert torch.equal(a, b)
    assert a.shape == c.shape and not torch.equal(a, c)
    two_epochs = list(token_sequences(docs, LetterTokenizer(), 32, seed=1, epochs=2))
    assert len(two_epochs) >= 2 * len(a) - 1
    forever = token_sequences(docs, LetterTokenizer(), 32, seed=1, epochs=None)
    assert len(list(itertools.islice(forever, 5 * len(a)))) == 5 * len(a)


def test_packing_with_a_real_tokenizer_on_shakespeare():
    from interp.model.tokenizer import train_tokenizer

    text = SHAKESPEARE.read_text()[:60_000]
    tokenizer = train_tokenizer([text], vocab_size=400, show_progress=False)
    corpus = list(cut_at_line_breaks(text, 2000))
    windows = list(itertools.islice(token_sequences(corpus, tokenizer, 64, seed=0), 20))
    assert all(w.shape == (64,) and w[0] == tokenizer.bos_id for w in windows)
    assert tokenizer.decode(windows[0][1:].tolist()) in text


def test_packing_refuses_a_context_shorter_than_two():
    with pytest.raises(ValueError, match="context_length must be at least 2"):
        next(token_sequences(["abc"], LetterTokenizer(), 1))


def test_shakespeare_is_packaged_with_a_held_out_split():
    """`shakespeare` reads the copy inside the installed package, not ../shared."""
    packaged = shakespeare_file()
    assert "shared" not in packaged.parts and packaged.parent.name == "corpora"
    assert packaged.read_bytes() == SHAKESPEARE.read_bytes()
    train, heldout = list(load_corpus("shakespeare", "train")), list(load_corpus("shakespeare", "heldout"))
    assert len(heldout) == (len(train) + len(heldout)) // HELDOUT_EVERY and not set(train) & set(heldout)
    assert "".join(list(load_corpus("shakespeare", "all"))) == packaged.read_text()
    assert default_prompt("shakespeare", load_corpus("shakespeare", "heldout")) == SHAKESPEARE_PROMPT
    assert SHAKESPEARE_PROMPT == "To be, or not to be, that is the question:"
