"""Hook capture: rows equal run_with_cache, several hooks per pass, early stop, kill-and-resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import transformer_lens.model_bridge.sources.native  # noqa: F401  (registers boot_native)
from transformer_lens.model_bridge import TransformerBridge

from interp.activations.capture import capture_to_disk, check_dtype
from interp.activations.hooks import check_hook_names, hook_settings, plan_capture, stop_layer
from interp.app.cli.main import main as interp_main
from interp.model.config import ModelConfig
from interp.model.corpus import cut_at_line_breaks, load_corpus, token_sequences
from interp.model.tokenizer import Tokenizer, train_tokenizer
from interp.model.transformer import build_native_model, load_model, save_model
from sae.data import ActivationDataset

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = "/work/shared/data/tinyshakespeare.txt"
CTX, VOCAB = 32, 300
TINY = dict(
    d_model=64,
    d_head=16,
    n_layers=2,
    n_ctx=CTX,
    n_heads=4,
    d_vocab=VOCAB,
    d_mlp=128,
    act_fn="gelu",
    seed=0,
    normalization_type="LN",
)


def boot(**overrides) -> TransformerBridge:
    bridge = TransformerBridge.boot_native({**TINY, **overrides})
    bridge.eval()
    return bridge


@pytest.fixture(scope="module")
def bridge() -> TransformerBridge:
    return boot()


def random_windows(n: int, seed: int) -> torch.Tensor:
    """[n, CTX] random token ids."""
    return torch.randint(0, VOCAB, (n, CTX), generator=torch.Generator().manual_seed(seed))


def read_all(path: Path) -> dict[str, torch.Tensor]:
    """Every shard of a dataset concatenated: acts, tokens, positions."""
    ds = ActivationDataset(path, verify=True)
    shards = [ds.shard(i) for i in range(ds.num_shards)]
    return {key: torch.cat([s[key] for s in shards]) for key in ("acts", "tokens", "positions")}


def cached_rows(bridge, windows: torch.Tensor, name: str) -> torch.Tensor:
    """The reference: run_with_cache's activation at `name`, one row per (window, position)."""
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(windows, names_filter=[name])
    act = cache[name]
    if name.endswith("hook_pattern"):  # [b, heads, q, k] -> one row per query position
        act = act.permute(0, 2, 1, 3)
    return act.reshape(windows.numel(), -1)


# --- known answers --------------------------------------------------------------------------


def test_stop_layer_is_deepest_block_plus_one_and_none_after_the_blocks():
    assert stop_layer(["blocks.0.mlp.hook_post"], 4) == 1
    assert stop_layer(["blocks.0.hook_resid_pre", "blocks.2.attn.hook_z"], 4) == 3
    assert stop_layer(["blocks.3.hook_resid_post"], 4) == 4
    assert stop_layer(["hook_embed", "pos_embed.hook_out"], 4) == 0
    assert stop_layer(["blocks.0.mlp.hook_post", "ln_final.hook_normalized"], 4) is None
    assert stop_layer(["unembed.hook_out"], 4) is None


# --- equality with run_with_cache -----------------------------------------------------------


def test_rows_equal_run_with_cache_exactly_for_float32_with_several_hooks_in_one_pass(bridge, tmp_path):
    windows = random_windows(20, seed=1)
    hooks = ["blocks.0.mlp.hook_post", "blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post"]
    total = 20 * CTX - 13  # the last window is cut short
    embed_calls = []
    bridge.hook_dict["hook_embed"].add_hook(lambda act, hook: embed_calls.append(1))
    try:
        paths = capture_to_disk(
            bridge,
            hooks,
            iter(windows),
            tmp_path,
            total_tokens=total,
            model_id="tiny",
            context_length=CTX,
            batch_size=6,
            tokens_per_shard=4 * CTX,
            metadata={"corpus": "random", "seed": 1},
            progress=False,
        )
    finally:
        bridge.hook_dict["hook_embed"].remove_hooks()
    # one probe pass plus one pass per batch of 6 windows serves all four hooks
    assert len(embed_calls) == 1 + 4
    expected_shape = {
        "blocks.0.mlp.hook_post": [128],
        "blocks.0.attn.hook_z": [4, 16],
        "blocks.0.attn.hook_pattern": [4, CTX],
        "blocks.1.hook_resid_post": [64],
    }
    for name in hooks:
        assert paths[name] == tmp_path / name
        got = read_all(paths[name])
        want = cached_rows(bridge, windows, name)[:total]
        assert got["acts"].dtype == torch.float32 and torch.equal(got["acts"], want), name
        assert torch.equal(got["tokens"], windows.reshape(-1)[:total].to(torch.int32))
        assert torch.equal(got["positions"], (torch.arange(total) % CTX).to(torch.int32))
        manifest = json.loads((paths[name] / "manifest.json").read_text())
        assert manifest["complete"] and manifest["total_tokens"] == total and manifest["hook_name"] == name
        assert manifest["metadata"]["activation_shape"] == expected_shape[name]
        assert manifest["metadata"]["corpus"] == "random" and manifest["metadata"]["hooks"] == hooks


@pytest.mark.parametrize("dtype, torch_dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_half_precision_rows_are_the_float32_rows_rounded(bridge, tmp_path, dtype, torch_dtype):
    windows = random_windows(6, seed=2)
    name = "blocks.1.mlp.hook_pre"
    capture_to_disk(
        bridge,
        [name],
        iter(windows),
        tmp_path,
        total_tokens=windows.numel(),
        model_id="tiny",
        context_length=CTX,
        dtype=dtype,
        batch_size=4,
        tokens_per_shard=2 * CTX,
        progress=False,
    )
    got = read_all(tmp_path / name)["acts"]
    want = cached_rows(bridge, windows, name)
    assert got.dtype == torch_dtype
    assert torch.equal(got, want.to(torch_dtype))
    eps = torch.finfo(torch_dtype).eps
    torch.testing.assert_close(got.float(), want, rtol=eps, atol=1e-5)


def test_gated_hook_is_turned_on_and_an_unsupported_one_refused(tmp_path):
    bridge = boot()
    windows = random_windows(2, seed=11)
    capture_to_disk(
        bridge,
        ["blocks.1.hook_mlp_in"],
        iter(windows),
        tmp_path,
        total_tokens=windows.numel(),
        model_id="tiny",
        context_length=CTX,
        tokens_per_shard=CTX,
        progress=False,
    )
    assert not bridge.cfg.use_hook_mlp_in  # the capture turned the setting on for its pass only
    with hook_settings(bridge, ["blocks.1.hook_mlp_in"]):
        reference = cached_rows(bridge, windows, "blocks.1.hook_mlp_in")
    assert torch.equal(read_all(tmp_path / "blocks.1.hook_mlp_in")["acts"], reference)
    with pytest.raises(ValueError, match="'blocks.0.attn.hook_result' needs the model setting use_attn_result"):
        plan_capture(bridge, ["blocks.0.attn.hook_result"], CTX)
    with pytest.raises(ValueError, match="'embed.hook_in' carries torch.int64 values \\(token ids\\)"):
        plan_capture(bridge, ["embed.hook_in"], CTX)


def test_pass_stops_after_the_deepest_hook(bridge, tmp_path):
    fired: dict[str, int] = {}
    watched = [
        "blocks.0.mlp.hook_post",
        "blocks.0.hook_mlp_out",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_in",
        "blocks.1.mlp.hook_post",
        "ln_final.hook_normalized",
        "unembed.hook_out",
    ]
    for name in watched:
        bridge.hook_dict[name].add_hook(lambda act, hook, name=name: fired.__setitem__(name, fired.get(name, 0) + 1))
    try:
        capture_to_disk(
            bridge,
            ["blocks.0.mlp.hook_post"],
            iter(random_windows(4, seed=3)),
            tmp_path,
            total_tokens=4 * CTX,
            model_id="tiny",
            context_length=CTX,
            batch_size=2,
            tokens_per_shard=CTX,
            progress=False,
        )
    finally:
        for name in watched:
            bridge.hook_dict[name].remove_hooks()
    assert fired == {"blocks.0.mlp.hook_post": 1 + 2}  # probe + two batches; nothing after it ran
    plan = plan_capture(bridge, ["blocks.0.mlp.hook_post"], CTX)
    assert plan.stop_at_layer == 1


def test_hugging_face_gpt2_rows_equal_run_with_cache_and_later_blocks_never_run(model_dir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer.load(model_dir / "tokenizer.json")
    folder = tmp_path / "gpt2-tiny"
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(
            n_layer=2,
            n_embd=32,
            n_head=2,
            vocab_size=tokenizer.vocab_size,
            n_positions=CTX,
            bos_token_id=0,
            eos_token_id=0,
        )
    ).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, eos_token="<|endoftext|>").save_pretrained(folder)
    bridge = load_model(folder).bridge
    hooks = ["blocks.0.attn.hook_z", "blocks.0.mlp.hook_post"]
    windows = random_windows(5, seed=12)
    later = []
    bridge.hook_dict["blocks.1.hook_in"].add_hook(lambda act, hook: later.append(1))
    try:
        capture_to_disk(
            bridge,
            hooks,
            iter(windows),
            tmp_path / "out",
            total_tokens=windows.numel(),
            model_id="gpt2-tiny",
            context_length=CTX,
            batch_size=2,
            tokens_per_shard=2 * CTX,
            progress=False,
        )
    finally:
        bridge.hook_dict["blocks.1.hook_in"].remove_hooks()
    assert later == []
    for name in hooks:
        assert torch.equal(read_all(tmp_path / "out" / name)["acts"], cached_rows(bridge, windows, name)), name


# --- resume ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved 2-layer native model (untrained) with a 300-token BPE tokenizer of Shakespeare."""
    tokenizer = train_tokenizer(
        cut_at_line_breaks(Path(SHAKESPEARE).read_text()[:50_000]), vocab_size=300, show_progress=False
    )
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, context_length=CTX, d_vocab=tokenizer.vocab_size)
    return save_model(build_native_model(cfg), cfg, tokenizer, tmp_path_factory.mktemp("model") / "tiny")


def cli_args(model_dir: Path, out: Path, *extra: str, tokens: int = 40 * CTX - 5) -> list[str]:
    return [
        "capture",
        "--model",
        str(model_dir),
        "--hook",
        "blocks.0.mlp.hook_post",
        "--hook",
        "blocks.1.hook_resid_pre",
        "--corpus",
        SHAKESPEARE,
        "--tokens",
        str(tokens),
        "--out",
        str(out),
        "--batch-size",
        "3",
        "--shard-tokens",
        str(4 * CTX),
        "--corpus-seed",
        "3",
        *extra,
    ]


def test_cli_capture_writes_the_corpus_windows_and_their_activations(model_dir, tmp_path, capsys):
    assert interp_main(cli_args(model_dir, tmp_path, "--split", "heldout", tokens=6 * CTX)) == 0
    loaded = load_model(model_dir)
    windows = torch.stack(
        [w for w, _ in zip(token_sequences(load_corpus(SHAKESPEARE, "heldout"), loaded.tokenizer, CTX, 3), range(6))]
    )
    for name in ("blocks.0.mlp.hook_post", "blocks.1.hook_resid_pre"):
        got = read_all(tmp_path / name)
        assert torch.equal(got["tokens"], windows.reshape(-1).to(torch.int32))
        assert torch.equal(got["acts"], cached_rows(loaded.bridge, windows, name))
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["model_id"] == "tiny" and manifest["context_length"] == CTX
        assert manifest["metadata"]["model"] == str(model_dir.resolve())
        assert {k: manifest["metadata"][k] for k in ("corpus", "split", "seed")} == {
            "corpus": SHAKESPEARE,
            "split": "heldout",
            "seed": 3,
        }
    assert f"blocks.0.mlp.hook_post: {tmp_path / 'blocks.0.mlp.hook_post'}" in capsys.readouterr().out


SLOW_CLI_CAPTURE = textwrap.dedent("""
    import sys, time
    import interp.activations.sources
    from interp.app.cli.main import main
    fast = interp.activations.sources.token_sequences
    def slow(*args, **kwargs):  # the corpus arrives slowly, so the parent can kill the capture midway
        for window in fast(*args, **kwargs):
            time.sleep(0.05)
            yield window
    interp.activations.sources.token_sequences = slow
    sys.exit(main(sys.argv[1:]))
""")


def shards_on_disk(path: Path) -> int:
    try:
        return len(json.loads((path / "manifest.json").read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_sigkilled_cli_capture_resumes_to_the_same_bytes_as_an_uninterrupted_one(model_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    hooks = ["blocks.0.mlp.hook_post", "blocks.1.hook_resid_pre"]
    victim = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI_CAPTURE, *cli_args(model_dir, killed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert interp_main(cli_args(model_dir, whole)) == 0
        deadline = time.monotonic() + 120
        while shards_on_disk(killed / hooks[1]) < 2 and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert victim.poll() is None, "the capture ended before it could be killed: " + victim.stderr.read().decode()
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    manifests = [json.loads((killed / name / "manifest.json").read_text()) for name in hooks]
    assert not any(m["complete"] for m in manifests) and all(m["shards"] for m in manifests)
    assert interp_main(cli_args(model_dir, killed, "--resume")) == 0
    for name in hooks:
        a, b = read_all(whole / name), read_all(killed / name)
        assert a["acts"].shape[0] == 40 * CTX - 5
        for key in ("acts", "tokens", "positions"):
            assert torch.equal(a[key], b[key]), (name, key)
        sha = [
            [s["sha256"] for s in json.loads((p / name / "manifest.json").read_text())["shards"]]
            for p in (whole, killed)
        ]
        assert sha[0] == sha[1]


def test_resume_continues_datasets_that_stopped_at_different_shards(bridge, tmp_path):
    """A kill can land between two hooks' shard writes: each dataset continues from its own end."""
    hooks = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]
    windows = random_windows(17, seed=5)
    kwargs = dict(
        total_tokens=windows.numel(),
        model_id="tiny",
        context_length=CTX,
        batch_size=4,
        tokens_per_shard=2 * CTX,
        metadata={"seed": 5},
        progress=False,
    )
    capture_to_disk(bridge, hooks, iter(windows), tmp_path / "whole", **kwargs)

    def interrupted_windows():
        yield from windows[:11]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        capture_to_disk(bridge, hooks, interrupted_windows(), tmp_path / "cut", **kwargs)
    # drop the last two shards of the second hook, as if the kill came before it caught up
    lagging = tmp_path / "cut" / hooks[1]
    manifest = json.loads((lagging / "manifest.json").read_text())
    assert len(manifest["shards"]) == 4 and not manifest["complete"]
    for entry in manifest["shards"][2:]:
        (lagging / entry["file"]).unlink()
    manifest["shards"] = manifest["shards"][:2]
    manifest["total_tokens"] = 4 * CTX
    (lagging / "manifest.json").write_text(json.dumps(manifest))

    capture_to_disk(bridge, hooks, iter(windows), tmp_path / "cut", resume=True, **kwargs)
    for name in hooks:
        a, b = read_all(tmp_path / "whole" / name), read_all(tmp_path / "cut" / name)
        for key in ("acts", "tokens", "positions"):
            assert torch.equal(a[key], b[key]), (name, key)


def test_cli_resume_on_a_retrained_model_is_refused(model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    assert interp_main(cli_args(model, tmp_path / "out", tokens=4 * CTX)) == 0
    cfg = ModelConfig(**json.loads((model / "config.json").read_text())["model"])
    retrained = build_native_model(dataclasses.replace(cfg, seed=cfg.seed + 1))
    save_model(retrained, cfg, Tokenizer.load(model / "tokenizer.json"), model)
    assert interp_main(cli_args(model, tmp_path / "out", "--resume", tokens=8 * CTX)) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "metadata['weights']" in err


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_refused_resume_with_fewer_tokens_changes_nothing(model_dir, tmp_path, capsys):
    """A complete dataset ending in a partial shard, resumed with fewer --tokens than it holds: refused,
    and the partial shard, the manifest and its `complete` flag are all as they were."""
    out = tmp_path / "out"
    assert interp_main(cli_args(model_dir, out, tokens=10 * CTX)) == 0  # shards of 4, 4 and 2 windows
    before = folder_bytes(out)
    assert interp_main(cli_args(model_dir, out, "--resume", tokens=5 * CTX)) == 2
    assert f"already holds {10 * CTX} tokens, more than --tokens {5 * CTX}" in capsys.readouterr().err
    assert folder_bytes(out) == before


def test_resume_with_another_seed_is_refused(bridge, tmp_path):
    kwargs = dict(
        total_tokens=4 * CTX, model_id="tiny", context_length=CTX, batch_size=2, tokens_per_shard=CTX, progress=False
    )
    capture_to_disk(
        bridge, ["blocks.0.hook_resid_post"], iter(random_windows(4, 6)), tmp_path, metadata={"seed": 6}, **kwargs
    )
    with pytest.raises(ValueError, match="seed"):
        capture_to_disk(
            bridge,
            ["blocks.0.hook_resid_post"],
            iter(random_windows(4, 7)),
            tmp_path,
            metadata={"seed": 7},
            resume=True,
            **kwargs,
        )


# --- bad input ------------------------------------------------------------------------------


def test_unknown_hook_lists_valid_names_and_the_closest_match(bridge, tmp_path):
    with pytest.raises(ValueError) as err:
        capture_to_disk(
            bridge,
            ["blocks.0.mlp.hook_psot"],
            iter(random_windows(2, 8)),
            tmp_path,
            total_tokens=CTX,
            model_id="tiny",
            context_length=CTX,
            progress=False,
        )
    message = str(err.value)
    assert "unknown hook name 'blocks.0.mlp.hook_psot'" in message
    assert "did you mean 'blocks.0.mlp.hook_post'?" in message
    assert "blocks.{0..1}.hook_resid_post" in message and "hook_embed" in message
    assert not any(tmp_path.iterdir()), "nothing is written for a bad hook name"


def test_repeated_or_missing_hook_names_are_refused():
    with pytest.raises(ValueError, match="more than once"):
        check_hook_names(["a", "b"], ["a", "a"])
    with pytest.raises(ValueError, match="no hook given"):
        check_hook_names(["a"], [])


def test_invalid_dtype_names_the_choices(bridge, tmp_path):
    with pytest.raises(ValueError, match="'float64' is not a storage dtype.*float32, float16, bfloat16"):
        capture_to_disk(
            bridge,
            ["blocks.0.hook_resid_post"],
            iter(random_windows(2, 9)),
            tmp_path,
            total_tokens=CTX,
            model_id="tiny",
            context_length=CTX,
            dtype="float64",
            progress=False,
        )
    assert check_dtype("bfloat16") == "bfloat16"


def test_empty_token_stream_is_refused_before_any_folder_is_made(bridge, tmp_path):
    with pytest.raises(ValueError, match="less than one window of 32 tokens"):
        capture_to_disk(
            bridge,
            ["blocks.0.hook_resid_post"],
            iter([]),
            tmp_path / "out",
            total_tokens=CTX,
            model_id="tiny",
            context_length=CTX,
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_non_finite_activation_names_hook_shard_and_row(tmp_path):
    bridge = boot()
    poison = 7
    with torch.no_grad():
        bridge.W_E[poison] = float("nan")
    windows = random_windows(12, seed=10)
    windows[windows == poison] = poison + 1
    windows[9, 12] = poison  # dataset token 9 * 32 + 12 = 300: shard 300 // 128 = 2, row 300 % 128 = 44
    name = "blocks.0.hook_resid_pre"
    with pytest.raises(ValueError) as err:
        capture_to_disk(
            bridge,
            [name],
            iter(windows),
            tmp_path,
            total_tokens=windows.numel(),
            model_id="tiny",
            context_length=CTX,
            batch_size=2,
            tokens_per_shard=4 * CTX,
            progress=False,
        )
    message = str(err.value)
    assert f"hook '{name}'" in message and str(tmp_path / name) in message
    assert "NaN" in message and "shard 2" in message and "row 44" in message
    kept = json.loads((tmp_path / name / "manifest.json").read_text())
    assert not kept["complete"] and kept["total_tokens"] == 2 * 4 * CTX  # complete shards before the bad one


def test_cli_reports_bad_dtype_unknown_hook_and_empty_corpus_as_errors(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert interp_main(cli_args(model_dir, out, "--dtype", "float64")) == 2
    assert "interp capture: error: --dtype 'float64' is not a storage dtype" in capsys.readouterr().err
    bad_hook = cli_args(model_dir, out)
    bad_hook[bad_hook.index("blocks.1.hook_resid_pre")] = "blocks.1.hook_resid_psot"
    assert interp_main(bad_hook) == 2
    assert "did you mean 'blocks.1.hook_resid_post'?" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = cli_args(model_dir, out)
    args[args.index(SHAKESPEARE)] = str(empty)
    assert interp_main(args) == 2
    assert f"interp capture: error: corpus {str(empty)!r} (split 'train') has no documents" in capsys.readouterr().err
    empty.write_text("too short for a window\n")
    assert interp_main(args) == 2
    assert "holds less than one window of 32 tokens" in capsys.readouterr().err
    assert not out.exists()


def test_background_writes_keep_order_and_report_the_failing_hook():
    """Every submitted batch is written, in order; a failed write is raised in the caller naming the
    hook and dataset, and the writes after it are dropped."""
    from interp.activations.capture import _BackgroundWrites

    class Recorder:
        path = Path("recorder")

        def __init__(self, fail_at=None):
            self.rows, self.fail_at = [], fail_at

        def add(self, rows, tokens, positions):
            if int(rows[0, 0]) == self.fail_at:
                raise ValueError("non-finite activation")
            self.rows.append(int(rows[0, 0]))

    one = torch.ones(1, dtype=torch.int32)
    recorder, writes = Recorder(), _BackgroundWrites(max_pending=2)
    for i in range(7):
        writes.submit("h", recorder, torch.full((1, 1), float(i)), one, one)
    writes.finish()
    assert recorder.rows == list(range(7))

    failing, writes = Recorder(fail_at=2), _BackgroundWrites(max_pending=2)
    for i in range(3):
        writes.submit("blocks.0.mlp.hook_post", failing, torch.full((1, 1), float(i)), one, one)
    with pytest.raises(ValueError, match=r"capture of hook 'blocks.0.mlp.hook_post' into recorder: non-finite"):
        for i in range(3, 6):
            writes.submit("blocks.0.mlp.hook_post", failing, torch.full((1, 1), float(i)), one, one)
        writes.finish()
    writes.close()
    assert failing.rows == [0, 1]


def test_bad_capture_arguments_are_refused_before_the_model_loads(model_dir, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (cli_args(model_dir, tmp_path / "o1", "--shard-tokens", "0"), "--shard-tokens must be positive, got 0"),
        (cli_args(model_dir, a_file), f"--out {a_file} is a file, not a folder"),
        (cli_args(model_dir, tmp_path / "o2", tokens=0), "--tokens must be positive, got 0"),
    ]
    if not torch.cuda.is_available():
        cases.append((cli_args(model_dir, tmp_path / "o3", "--device", "cuda"), "asks for a GPU but this torch"))
    for argv, message in cases:
        assert interp_main(argv) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
