"""Byte-level BPE: training, exact round trips on real text, save/load, readable token strings,
and a Hugging Face checkpoint's tokenizer behind the same interface."""

import json
from pathlib import Path

import pytest

from interp.model.builtin import stdlib_files
from interp.model.corpus import cut_at_line_breaks
from interp.model.tokenizer import BOS_TOKEN, TOKENIZER_FILE, Tokenizer, train_tokenizer

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")
VOCAB = 600


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return SHAKESPEARE.read_text()


@pytest.fixture(scope="module")
def tokenizer(shakespeare) -> Tokenizer:
    return train_tokenizer(cut_at_line_breaks(shakespeare[:200_000]), vocab_size=VOCAB, show_progress=False)


def test_trained_vocabulary_has_bos_first_and_the_requested_size(tokenizer):
    assert tokenizer.vocab_size == VOCAB
    assert tokenizer.bos_id == 0 and tokenizer.backend.id_to_token(0) == BOS_TOKEN
    assert tokenizer.encode("") == []
    assert tokenizer.bos_id not in tokenizer.encode("To be, or not to be")  # no special token added


def test_round_trip_is_exact_on_real_text(tokenizer, shakespeare):
    unseen = shakespeare[-20_000:]  # past the 200k characters the tokenizer learned from
    python_source = stdlib_files()[0].read_text()
    other = "naïve café — 東京 🐍\ttabs\r\nand  double  spaces\x00"
    for text in (unseen, python_source, other):
        ids = tokenizer.encode(text)
        assert all(0 <= i < tokenizer.vocab_size for i in ids)
        assert tokenizer.decode(ids) == text
    assert tokenizer.decode([tokenizer.bos_id]) == BOS_TOKEN
    # BPE learned merges: 600 tokens already take English well below one token per byte
    assert len(tokenizer.encode(unseen)) < 0.6 * len(unseen)
    assert tokenizer.encode_batch([unseen[:500], other]) == [tokenizer.encode(unseen[:500]), tokenizer.encode(other)]


def test_save_and_load_give_the_same_tokenizer(tokenizer, shakespeare, tmp_path):
    path = tokenizer.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / TOKENIZER_FILE and path.is_file()
    for source in (tmp_path / "tok", path):
        loaded = Tokenizer.load(source)
        assert loaded.bos_id == tokenizer.bos_id and loaded.vocab_size == tokenizer.vocab_size
        assert loaded.encode(shakespeare[:5000]) == tokenizer.encode(shakespeare[:5000])
        assert loaded.token_strings() == tokenizer.token_strings()


def test_token_strings_known_answers(tokenizer, shakespeare):
    strings = tokenizer.token_strings()
    assert len(strings) == tokenizer.vocab_size and strings[0] == BOS_TOKEN
    text = shakespeare[5000:7000]  # ASCII: each token's string is exactly its piece of the text
    assert "".join(strings[i] for i in tokenizer.encode(text)) == text
    # a character the training text never had splits into bytes, shown as escapes
    assert [strings[i] for i in tokenizer.encode("é")] == ["\\xc3", "\\xa9"]
    newline_ids = tokenizer.encode("\n")
    assert [strings[i] for i in newline_ids] == ["\n"]


def test_training_refuses_a_vocabulary_smaller_than_the_bytes():
    with pytest.raises(ValueError, match="vocab_size must exceed 257"):
        train_tokenizer(["some text"], vocab_size=200, show_progress=False)


def test_missing_or_foreign_tokenizer_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer file .*nowhere does not exist"):
        Tokenizer.load(tmp_path / "nowhere")
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(ValueError, match="garbage.json is not a readable tokenizers JSON file"):
        Tokenizer.load(tmp_path / "garbage.json")
    import tokenizers
    from tokenizers import models, pre_tokenizers

    no_bos = tokenizers.Tokenizer(models.BPE())
    no_bos.pre_tokenizer = pre_tokenizers.ByteLevel()
    no_bos.train_from_iterator(["abc abd"], tokenizers.trainers.BpeTrainer(vocab_size=300, show_progress=False))
    no_bos.save(str(tmp_path / "no-bos.json"))
    with pytest.raises(ValueError, match=r"no-bos.json has no '<\|endoftext\|>' token"):
        Tokenizer.load(tmp_path / "no-bos.json")


def test_hugging_face_tokenizer_folder_behind_the_same_interface(tokenizer, shakespeare, tmp_path):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, bos_token=BOS_TOKEN, eos_token=BOS_TOKEN)
    hf.save_pretrained(tmp_path / "hf")
    loaded = Tokenizer.from_pretrained(tmp_path / "hf")
    text = shakespeare[1000:3000]
    assert loaded.bos_id == tokenizer.bos_id
    assert loaded.encode(text) == tokenizer.encode(text) == hf(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(loaded.encode(text)) == text
    assert loaded.token_strings() == tokenizer.token_strings()

    # eos stands in for bos when a checkpoint has none (GPT-2 style)
    only_eos = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, eos_token=BOS_TOKEN)
    only_eos.save_pretrained(tmp_path / "eos")
    config = json.loads((tmp_path / "eos" / "tokenizer_config.json").read_text())
    assert config.get("bos_token") in (None, "")
    assert Tokenizer.from_pretrained(tmp_path / "eos").bos_id == 0


def test_fragment_ids_are_the_tokens_that_are_not_whole_characters(tokenizer):
    data = tokenizer.token_bytes()
    fragments = set(tokenizer.fragment_ids())
    strict = set()
    for i, b in enumerate(data):
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            strict.add(i)
    assert fragments == strict
    strings = tokenizer.token_strings()
    assert sum(len(data[i]) == 1 and data[i][0] >= 0x80 for i in fragments) == 128  # every byte 0x80-0xFF alone
    assert all("\\x" in strings[i] for i in fragments)
    assert not any(data[i] and data[i][0] < 0x80 and len(data[i]) == 1 for i in fragments)  # ASCII bytes are whole
    backslash = tokenizer.encode("\\")[0]
    assert backslash not in fragments and strings[backslash] == "\\"


def test_byte_fallback_pieces_are_bytes_and_marked():
    """A sentencepiece-style vocabulary with byte fallback: <0xC3> is a fragment shown as \\xc3, <0x41>
    is the whole character A, and a literal U+FFFD token is text."""
    import tokenizers
    from tokenizers import decoders, models

    vocab = {BOS_TOKEN: 0, "a": 1, "é": 2, "<0xC3>": 3, "<0xA9>": 4, "<0x41>": 5, "\ufffd": 6}
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens([BOS_TOKEN])
    tk = Tokenizer(backend, 0)
    assert tk.fragment_ids() == [3, 4]
    assert tk.token_strings()[3:6] == ["\\xc3", "\\xa9", "A"] and tk.token_bytes()[3:6] == [b"\xc3", b"\xa9", b"A"]
    assert tk.token_strings()[6] == "\ufffd"
