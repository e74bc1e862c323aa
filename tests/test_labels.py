"""Labels: AUROC and correlation against hand-computed values and a pairwise reference; planted
features whose rule is known by construction (one token, noise, an n-gram, a next token, a character
class, a context-wide feature); the build / held-out split; labels.json, the CLI and bad inputs; the
optional language-model labeller against a chat-completions server on loopback."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time

import numpy as np
import pytest
import torch
from planted import planted_analysis, zipf_tokens

from interp.features.analysis import artifact as artifact_module
from interp.features.analysis.artifact import Analysis, read_fingerprint
from interp.features.analysis.config import AnalysisConfig
from interp.features.labels.config import LabelConfig
from interp.features.labels.evidence import held_out_sequences
from interp.features.labels.files import LABELS_FILE, read_labels
from interp.features.labels.labeller import Labeller, label_analysis, run_labels
from interp.features.labels.llm import LLMConfig, LLMLabeller
from interp.features.labels.rules import auroc, pearson, show_token
from interp.features.search import FeatureIndex

N_SEQ, T, V = 300, 32, 64
VOCAB = ["<bos>"] + [f" w{i}" for i in range(1, 50)] + [str(d) for d in range(10)] + ["(", ")", ":", ","]
TOKEN, NGRAM_PREV, NGRAM_TOKEN, NEXT_TOKEN, CONTEXT_TOKEN = 5, 4, 9, 13, 20
DIGITS = list(range(50, 60))
PLANTED = {"token": 0, "noise": 1, "ngram": 2, "next": 3, "digits": 4, "context": 5, "dead": 6}
F = len(PLANTED)
CFG = AnalysisConfig(
    top_k=12,
    intervals=3,
    interval_samples=4,
    window_left=4,
    window_right=2,
    top_tokens=12,
    neighbours=4,
    random_sequences=150,
)


def planted_activations(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(f [N_SEQ, T, F], tokens [N_SEQ, T]) with each feature of PLANTED firing by its rule, values
    log-normal so that the top and interval examples differ from each other."""
    g = torch.Generator().manual_seed(seed)
    tokens = zipf_tokens(N_SEQ, T, V, seed=seed, exponent=0.6)
    for s in range(N_SEQ):  # plant the bigram (4, 9), lone 9s, 13s, and token 20 in a third of the sequences
        p = torch.randperm(T - 3, generator=g)[:4] + 1
        tokens[s, p[0]], tokens[s, p[0] + 1] = NGRAM_PREV, NGRAM_TOKEN
        tokens[s, p[1]] = NGRAM_TOKEN
        tokens[s, p[2] + 1] = NEXT_TOKEN
        if s % 3 == 0:
            tokens[s, p[3]] = CONTEXT_TOKEN
    tokens[:, 0] = 0

    def value():
        return torch.exp(0.4 * torch.randn(N_SEQ, T, generator=g)) + 0.5

    f = torch.zeros(N_SEQ, T, F)
    prev = torch.cat([torch.full((N_SEQ, 1), -1), tokens[:, :-1]], 1)
    nxt = torch.cat([tokens[:, 1:], torch.full((N_SEQ, 1), -1)], 1)
    f[..., PLANTED["token"]] = (tokens == TOKEN) * value()
    f[..., PLANTED["noise"]] = (torch.rand(N_SEQ, T, generator=g) < 0.08) * value()
    f[..., PLANTED["ngram"]] = ((tokens == NGRAM_TOKEN) & (prev == NGRAM_PREV)) * value()
    f[..., PLANTED["next"]] = (nxt == NEXT_TOKEN) * value()
    f[..., PLANTED["digits"]] = torch.isin(tokens, torch.tensor(DIGITS)) * value()
    seen = torch.cummax((tokens == CONTEXT_TOKEN).int(), dim=1).values.bool()
    f[..., PLANTED["context"]] = seen * value()
    f[:, 0] = 0.0
    return f, tokens


def unembed_and_decoder() -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder rows e_i [F, F]; the unembedding [F, V] makes the 'next' feature promote NEXT_TOKEN most."""
    g = torch.Generator().manual_seed(9)
    unembed = 0.1 * torch.randn(F, V, generator=g)
    unembed[PLANTED["next"], NEXT_TOKEN] = 5.0
    return torch.eye(F), unembed


def batches(f, tokens, size=16):
    for s in range(0, len(tokens), size):
        yield f[s : s + size], tokens[s : s + size]


@pytest.fixture(scope="module")
def planted():
    f, tokens = planted_activations()
    W_dec, unembed = unembed_and_decoder()
    analysis = planted_analysis(batches(f, tokens), VOCAB, CFG, W_dec=W_dec, unembed=unembed, expected_sequences=N_SEQ)
    labels = label_analysis(analysis, progress=False)
    return analysis, labels, f, tokens


# ---- the scores ---------------------------------------------------------------------------------


def test_auroc_hand_computed_with_ties():
    # positive 0.9 beats 3 negatives and ties 1 (3.5); each 0.5 beats 1 and ties 2 (2 each): 7.5 / 12
    assert auroc(np.array([0.9, 0.5, 0.5]), np.array([0.5, 0.1, 0.5, 0.9])) == pytest.approx(0.625, abs=1e-15)
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([0.0]), np.array([1.0, 2.0])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    assert auroc(np.array([]), np.array([1.0])) is None and auroc(np.array([1.0]), np.array([])) is None


def test_auroc_equals_pairwise_count_on_random_ties():
    rng = np.random.default_rng(4)
    pos, neg = rng.integers(0, 6, 300).astype(float), rng.integers(0, 5, 500).astype(float)
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auroc(pos, neg) == pytest.approx(pairs / (300 * 500), abs=1e-12)


def test_pearson_known_answers():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    # hand computed: dx = (-1.5,-0.5,0.5,1.5), y = (1,0,0,1) -> dy = (.5,-.5,-.5,.5): sum dx*dy = 0
    assert pearson(x, np.array([1.0, 0.0, 0.0, 1.0])) == pytest.approx(0.0, abs=1e-15)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert pearson(x, np.ones(4)) is None and pearson(x[:1], x[:1]) is None


# ---- planted features -----------------------------------------------------------------------------


def test_single_token_feature_is_named_with_auroc_one(planted):
    _, labels, _, _ = planted
    label = labels[PLANTED["token"]]
    assert label.rule["kind"] == "tokens" and label.rule["tokens"] == [TOKEN]
    assert label.label.startswith("fires on " + show_token(VOCAB[TOKEN]))
    assert label.score == 1.0 and label.held_out["positives"] > 20 and label.held_out["negatives"] > 1000
    assert label.correlation > 0.8


def test_noise_feature_scores_near_chance(planted):
    _, labels, _, _ = planted
    label = labels[PLANTED["noise"]]
    assert label.held_out["positives"] > 150
    assert abs(label.score - 0.5) < 0.07 and abs(label.correlation) < 0.15


def test_ngram_feature_names_the_preceding_token(planted):
    _, labels, _, _ = planted
    label = labels[PLANTED["ngram"]]
    assert label.rule["kind"] == "ngram" and label.rule["preceding"] == [{"offset": -1, "token": NGRAM_PREV}]
    assert "after " + show_token(VOCAB[NGRAM_PREV]) in label.label
    assert label.score == 1.0
    token_only = next(c for c in label.candidates if c["kind"] == "tokens")
    assert token_only["build_auroc"] < 0.99  # the lone 9s make the token alone a worse rule


def test_next_token_feature_predicts_it(planted):
    _, labels, _, _ = planted
    label = labels[PLANTED["next"]]
    assert label.rule["kind"] == "next" and NEXT_TOKEN in label.rule["next_tokens"]
    assert label.label.startswith("before " + show_token(VOCAB[NEXT_TOKEN]))
    assert label.facts["predicts"]["agreement"] == 1.0 and label.facts["predicts"]["base_rate"] < 0.2
    assert label.score == 1.0


def test_digit_feature_gets_its_character_class(planted):
    _, labels, _, _ = planted
    label = labels[PLANTED["digits"]]
    assert label.facts["class"]["name"] == "digits" and label.facts["class"]["share"] == 1.0
    assert label.rule["kind"] == "class" and label.label.startswith("digits")
    assert label.score == 1.0


def test_context_wide_feature(planted):
    _, labels, _, _ = planted
    label = labels[PLANTED["context"]]
    assert label.facts["context_wide"] > 0.3 and "context-wide" in label.label
    assert label.rule["kind"] == "context" and label.rule["context_tokens"][0] == CONTEXT_TOKEN
    # the rule sees only window_left (4) tokens back, while the feature stays on to the sequence's end
    assert label.score > 0.6
    token_only = next(c for c in label.candidates if c["kind"] == "tokens")
    assert token_only["build_auroc"] < label.build_auroc


def test_dead_feature_is_unscored(planted):
    _, labels, _, _ = planted
    assert labels[PLANTED["dead"]].score is None and "dead" in labels[PLANTED["dead"]].label


def test_build_mass_leaves_out_exactly_the_held_out_positions(planted):
    """The token mass a label is built from equals a brute-force sum over every token position
    except those it is scored on: all of the held-out random windows and the held-out example windows."""
    analysis, _, f, tokens = planted
    labeller = Labeller(analysis)
    d = labeller.data
    random_seqs = set(d.random_seq.tolist())
    for i in (PLANTED["token"], PLANTED["noise"], PLANTED["digits"]):
        ex = d.examples(i)
        scored = np.zeros((N_SEQ, T), bool)
        for s in random_seqs:
            scored[s] = held_out_sequences(np.array([s]))[0]
        for s, p in zip(ex.seq[ex.held_out], ex.pos[ex.held_out]):
            scored[s, max(p - CFG.window_left, 0) : p + CFG.window_right + 1] = True
        fi = f[..., i].double().numpy() * ~scored
        fi[:, 0] = 0.0
        build, total = labeller.build_token_mass(i, ex, d.random_activations(i))
        assert total == pytest.approx(fi.sum(), rel=1e-5)
        for t, m in build.items():
            assert m == pytest.approx(fi[tokens.numpy() == t].sum(), rel=1e-5, abs=1e-4)
        assert scored.sum() > 0 and (~scored & (f[..., i].numpy() > 0)).sum() > 0


def test_split_is_by_sequence_and_balanced(planted):
    analysis, labels, _, _ = planted
    held = held_out_sequences(np.arange(10_000))
    assert 0.47 < held.mean() < 0.53
    assert held_out_sequences(np.array([-1]))[0] == False  # noqa: E712  (padding is never held out)
    d = Labeller(analysis).data
    ex = d.examples(PLANTED["token"])
    assert ex.held_out.any() and (~ex.held_out).any()
    assert (ex.held_out == held[ex.seq]).all()


# ---- the file, the CLI, bad inputs ---------------------------------------------------------------


def test_cli_writes_labels_the_report_can_read(planted, tmp_path):
    from interp.app.cli.main import main
    from interp.features.labels.files import read_labels as report_read_labels

    analysis, labels, _, _ = planted
    analysis.save(tmp_path / "a")
    assert main(["label", "--analysis", str(tmp_path / "a")]) == 0
    saved = read_labels(tmp_path / "a")
    assert (
        saved[PLANTED["token"]]["label"] == labels[PLANTED["token"]].label and saved[PLANTED["token"]]["score"] == 1.0
    )
    data = json.loads((tmp_path / "a" / LABELS_FILE).read_text())
    assert data["format"] == "monosemantic-labels" and data["config"]["coverage"] == 0.8
    shown = report_read_labels(tmp_path / "a")
    assert shown[PLANTED["next"]]["label"].startswith("before")


def test_bad_inputs_are_refused(planted, tmp_path):
    analysis, _, _, _ = planted
    with pytest.raises(ValueError, match="coverage"):
        LabelConfig(coverage=1.5).validate()
    old = Analysis(
        meta=analysis.meta,
        tensors={k: v for k, v in analysis.tensors.items() if k != "random_seq"},
        token_strings=analysis.token_strings,
        path=tmp_path,
    )
    with pytest.raises(ValueError, match="random_seq.*Re-run `interp analyze`"):
        Labeller(old)
    (tmp_path / LABELS_FILE).write_text("{broken")
    with pytest.raises(ValueError, match="not readable JSON"):
        read_labels(tmp_path)
    (tmp_path / LABELS_FILE).write_text(json.dumps({"features": [{"id": "x"}]}))
    with pytest.raises(ValueError, match="'features'"):
        read_labels(tmp_path)
    with pytest.raises(FileNotFoundError, match="interp analyze"):
        run_labels(tmp_path / "missing")


def test_reanalysis_clears_stale_labels_and_labels_of_another_analysis_are_refused(planted, tmp_path, monkeypatch):
    """Labels record the fingerprint of the analysis they label: saving a new analysis into a labelled
    folder deletes its labels, and labels carried over from another analysis are refused by the reader."""
    analysis, _, _, _ = planted
    first = tmp_path / "first"
    analysis.save(first)
    run_labels(first, progress=False)
    assert read_labels(first) and json.loads((first / LABELS_FILE).read_text())["analysis"] == read_fingerprint(first)
    labels_of_first = (first / LABELS_FILE).read_bytes()

    analysis.meta = {**analysis.meta, "created": "another run"}
    analysis.save(first)  # re-analysed into the labelled folder
    assert not (first / LABELS_FILE).exists()
    (first / "neurons").mkdir()
    (first / "neurons" / "analysis.json").write_text("{}")  # neurons of an earlier SAE on MLP neurons
    analysis.save(first)  # this analysis has no neurons: the old ones go
    assert not (first / "neurons").exists()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(artifact_module, "write_safetensors", killed)
        with pytest.raises(KeyboardInterrupt):
            analysis.save(first)  # killed while writing
    with pytest.raises(FileNotFoundError, match="has no analysis.json; re-run `interp analyze"):
        Analysis.load(first)  # an interrupted save is refused, not read as a mixture

    second = tmp_path / "second"
    analysis.save(second)
    (second / LABELS_FILE).write_bytes(labels_of_first)  # labels copied from another analysis
    with pytest.raises(ValueError, match="labels another analysis .* re-run `interp label --analysis"):
        read_labels(second)
    with pytest.raises(ValueError, match="labels another analysis"):
        FeatureIndex.load(second)


def test_an_analysis_without_its_sae_field_is_named(planted, tmp_path):
    analysis, _, _, _ = planted
    analysis.save(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "analysis.json").read_text())
    del meta["sae"]
    (tmp_path / "a" / "analysis.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="field 'sae' must be an object with a positive integer 'd_sae'"):
        Analysis.load(tmp_path / "a")


# ---- the optional language-model labeller ----------------------------------------------------------


class FakeChat(http.server.BaseHTTPRequestHandler):
    """Speaks the chat-completions protocol: explains any feature as the token most often marked,
    and scores snippets 1 when their marked token is the one named in the explanation."""

    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path.startswith("/redirect/"):  # to the same server under another host name
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/v1/chat/completions")
            self.end_headers()
            return
        if self.path.startswith("/huge/"):
            self.send_response(200)
            self.end_headers()
            for _ in range(80):
                self.wfile.write(b" " * 65536)  # 5 MiB of nothing
            return
        if self.path.startswith("/drip/"):
            self.send_response(200)
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)  # each read is quick; the whole reply takes 4 s
            return
        if self.path.startswith("/garbled/"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"choices": [{"message": {"content": null}}]}')
            return
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "no such route"}')
            return
        prompt = body["messages"][-1]["content"]
        marked = [re.search("«(.*?)»", line).group(1) for line in prompt.splitlines() if re.match(r"\d+\. ", line)]
        if "Explain" in prompt:
            content = "the token " + json.dumps(max(set(marked), key=marked.count))
        else:
            named = json.loads(re.search(r"described as: the token (\".*?\")", prompt).group(1))
            content = json.dumps([1.0 if m == named else 0.0 for m in marked])
        reply = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture()
def chat_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeChat.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_llm_labeller_explains_scores_and_caches(planted, tmp_path, chat_server, monkeypatch):
    from interp.app.cli.main import main

    analysis, _, _, _ = planted
    analysis.save(tmp_path / "a")
    monkeypatch.setenv("MONOSEMANTIC_LLM_API_KEY", "test-key")
    args = [
        "label",
        "--analysis",
        str(tmp_path / "a"),
        "--llm",
        "--llm-base-url",
        chat_server + "/v1",
        "--llm-model",
        "fake",
        "--llm-features",
        "7",
    ]
    assert main(args) == 0
    sent = len(FakeChat.requests)
    assert sent == 2 * 6 and all(
        r["auth"] == "Bearer test-key" and r["body"]["model"] == "fake" for r in FakeChat.requests
    )
    labels = read_labels(tmp_path / "a")
    token = labels[PLANTED["token"]]["facts"]["llm"]
    assert token["explanation"] == 'the token " w5"' and token["score"] == 1.0 and token["items"] > 20
    assert json.loads((tmp_path / "a" / LABELS_FILE).read_text())["llm"] == {
        "base_url": chat_server + "/v1",
        "model": "fake",
    }
    assert "test-key" not in (tmp_path / "a" / LABELS_FILE).read_text()
    assert main(args) == 0 and len(FakeChat.requests) == sent  # every answer came from the cache
    assert read_labels(tmp_path / "a")[PLANTED["token"]]["facts"]["llm"] == token


def test_llm_key_never_follows_a_redirect_and_replies_are_bounded(planted, tmp_path, chat_server):
    analysis, _, _, _ = planted
    analysis.save(tmp_path / "a")

    def labeller(route: str, timeout: float = 30.0) -> LLMLabeller:
        return LLMLabeller(
            LLMConfig(base_url=chat_server + route, model="m", api_key="secret", features=3, timeout_s=timeout)
        )

    with pytest.raises(ValueError, match="HTTP 302: redirect to http://localhost:.* refused"):
        run_labels(tmp_path / "a", neurons=False, llm=labeller("/redirect/v1"), progress=False)
    assert [r["auth"] for r in FakeChat.requests] == ["Bearer secret"]  # nothing reached the other host name
    assert read_labels(tmp_path / "a")  # the rule labels were saved before the endpoint was asked

    with pytest.raises(ValueError, match="cannot reach .* longer than the deadline"):
        run_labels(tmp_path / "a", neurons=False, llm=labeller("/drip/v1", timeout=1.0), progress=False)

    for route, message in (("/huge/v1", "more than 4,194,304 bytes"), ("/garbled/v1", "content string")):
        run_labels(tmp_path / "a", neurons=False, llm=labeller(route), progress=False)
        labels = read_labels(tmp_path / "a")
        errors = [r["facts"]["llm"]["error"] for r in labels.values() if "llm" in r.get("facts", {})]
        assert len(errors) == 3 and all(message in e for e in errors), errors  # one per feature, the run went on
        assert all(isinstance(r["label"], str) for r in labels.values())


def test_llm_errors_are_clear(planted, tmp_path, chat_server, monkeypatch):
    from interp.app.cli.features import llm_labeller
    from interp.features.labels.config import LLMOptions

    analysis, _, _, _ = planted
    analysis.save(tmp_path / "a")
    monkeypatch.delenv("MONOSEMANTIC_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("MONOSEMANTIC_LLM_MODEL", raising=False)
    with pytest.raises(ValueError, match="--llm-base-url"):
        llm_labeller(LLMOptions(llm=True))
    bad_route = LLMOptions(llm=True, llm_base_url=chat_server + "/nope", llm_model="m", llm_features=1)
    with pytest.raises(ValueError, match="HTTP 404"):
        run_labels(tmp_path / "a", neurons=False, llm=llm_labeller(bad_route), progress=False)
    unreachable = LLMOptions(llm=True, llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_features=1)
    with pytest.raises(ValueError, match="cannot reach"):
        run_labels(tmp_path / "a", neurons=False, llm=llm_labeller(unreachable), progress=False)
