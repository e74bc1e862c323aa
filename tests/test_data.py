"""The activation dataset: round trips, the shuffled stream, resumption, and every refusal."""

import errno
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sae.data import ActivationDataset
from sae.writer import ActivationWriter

CTX = 8


def write(path, acts, *, dtype="float32", tokens_per_shard=64, step=37, **kw):
    """Write acts [n, d] in uneven pieces; tokens are the row indices."""
    n, d = acts.shape
    with ActivationWriter(
        path,
        d_in=d,
        dtype=dtype,
        hook_name="blocks.0.hook_mlp_out",
        model_id="toy",
        context_length=CTX,
        tokens_per_shard=tokens_per_shard,
        metadata={"seed": 3},
        **kw,
    ) as w:
        for i in range(0, n, step):
            w.add(acts[i : i + step], torch.arange(i, min(i + step, n)))
    return path


def indexed(n, d=6, seed=0):
    """Random rows whose column 0 holds the row index (exact in float32), to trace rows through the stream."""
    acts = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    acts[:, 0] = torch.arange(n, dtype=torch.float32)
    return acts


def row_ids(batch):
    return batch[:, 0].long().tolist()


@pytest.mark.parametrize(
    "dtype,torch_dtype", [("float32", torch.float32), ("float16", torch.float16), ("bfloat16", torch.bfloat16)]
)
def test_round_trip_every_dtype(tmp_path, dtype, torch_dtype):
    acts = torch.randn(300, 5, generator=torch.Generator().manual_seed(1)) * 3
    write(tmp_path / "ds", acts, dtype=dtype)
    ds = ActivationDataset(tmp_path / "ds", verify=True)
    assert (ds.d_in, ds.dtype, ds.num_tokens, ds.num_shards, ds.context_length) == (5, torch_dtype, 300, 5, CTX)
    assert ds.hook_name == "blocks.0.hook_mlp_out" and ds.model_id == "toy" and ds.manifest["metadata"] == {"seed": 3}
    assert [s["tokens"] for s in ds.manifest["shards"]] == [64, 64, 64, 64, 44] and ds.manifest["complete"]
    shards = [ds.shard(i) for i in range(ds.num_shards)]
    assert all(s["acts"].dtype == torch_dtype for s in shards)
    assert torch.equal(torch.cat([s["acts"] for s in shards]), acts.to(torch_dtype))
    assert torch.equal(torch.cat([s["tokens"] for s in shards]), torch.arange(300, dtype=torch.int32))
    assert torch.equal(torch.cat([s["positions"] for s in shards]), torch.arange(300, dtype=torch.int32) % CTX)
    official = load_file(tmp_path / "ds" / "acts-00001.safetensors")  # shards are plain safetensors files
    assert torch.equal(official["acts"], acts[64:128].to(torch_dtype)) and official["tokens"].dtype == torch.int32
    # file order, converted to the requested dtype; the last partial batch is dropped
    batches = list(ds.batches(50, shuffle_buffer=0))
    assert len(batches) == 6 and batches[0].dtype == torch.float32
    assert torch.equal(torch.cat(batches), acts.to(torch_dtype).float())
    assert next(iter(ds.batches(50, dtype=torch.float64))).dtype == torch.float64


def test_explicit_positions_are_stored(tmp_path):
    acts = torch.randn(20, 3)
    pos = torch.randint(0, CTX, (20,))
    with ActivationWriter(
        tmp_path, d_in=3, dtype="float32", hook_name="h", model_id="m", context_length=CTX, tokens_per_shard=16
    ) as w:
        w.add(acts, torch.arange(20), pos)
    ds = ActivationDataset(tmp_path)
    assert torch.equal(torch.cat([ds.shard(i)["positions"] for i in range(2)]), pos.int())


def test_shuffle_covers_every_row_once_per_epoch_and_mixes_shards(tmp_path):
    ds = ActivationDataset(write(tmp_path / "ds", indexed(640)))  # 10 shards of 64 rows
    stream = ds.batches(32, shuffle_buffer=128, seed=5, epochs=2)
    assert len(stream) == 40
    batches = [row_ids(b) for b in stream]
    epoch0, epoch1 = sum(batches[:20], []), sum(batches[20:], [])
    assert sorted(epoch0) == list(range(640)) and sorted(epoch1) == list(range(640))
    assert epoch0 != epoch1 and epoch0 != list(range(640))
    assert min(len({r // 64 for r in b}) for b in batches) >= 2  # every batch mixes several shards
    # a different seed gives a different order; the same seed the same one
    assert [row_ids(b) for b in ds.batches(32, shuffle_buffer=128, seed=6)] != batches[:20]
    assert [row_ids(b) for b in ds.batches(32, shuffle_buffer=128, seed=5)] == batches[:20]


def test_partial_epoch_remainder_is_dropped_never_repeated(tmp_path):
    ds = ActivationDataset(write(tmp_path / "ds", indexed(300)))
    rows = sum((row_ids(b) for b in ds.batches(64, shuffle_buffer=100, seed=1)), [])
    assert len(rows) == 256 and len(set(rows)) == 256 and set(rows) <= set(range(300))


def test_ranks_split_each_global_batch(tmp_path):
    ds = ActivationDataset(write(tmp_path / "ds", indexed(640)))
    single = list(ds.batches(48, shuffle_buffer=96, seed=2, epochs=2))
    per_rank = [list(ds.batches(16, shuffle_buffer=96, seed=2, epochs=2, rank=r, world_size=3)) for r in range(3)]
    assert all(len(p) == len(single) for p in per_rank)
    for step, batch in enumerate(single):
        parts = [per_rank[r][step] for r in range(3)]
        assert torch.equal(torch.cat(parts), batch)
        assert len(set().union(*(row_ids(p) for p in parts))) == 48  # disjoint
    with pytest.raises(ValueError, match="rank"):
        ds.batches(16, rank=3, world_size=3)


def test_resumed_stream_continues_with_exactly_the_next_batch(tmp_path):
    ds = ActivationDataset(write(tmp_path / "ds", indexed(640)))
    for k in (0, 3, 13, 20, 27):  # including the epoch boundary (20 batches per epoch)
        stream = ds.batches(32, shuffle_buffer=128, seed=9, epochs=2)
        for _ in range(k):
            next(stream)
        state = json.loads(json.dumps(stream.state_dict()))
        rest = list(stream)
        resumed = list(
            ActivationDataset(tmp_path / "ds").batches(32, shuffle_buffer=128, seed=9, epochs=2, state=state)
        )
        assert len(resumed) == len(rest) == 40 - k
        assert all(torch.equal(a, b) for a, b in zip(rest, resumed))
    # the state is global: rank 1 of 2 resumes on its half of the same next global batch
    stream = ds.batches(32, shuffle_buffer=128, seed=9)
    for _ in range(5):
        next(stream)
    state, following = stream.state_dict(), next(stream)
    half = next(ds.batches(16, shuffle_buffer=128, seed=9, rank=1, world_size=2, state=state))
    assert torch.equal(half, following[16:])


def test_resume_with_other_settings_is_refused(tmp_path):
    ds = ActivationDataset(write(tmp_path / "ds", indexed(640)))
    state = ds.batches(32, shuffle_buffer=128, seed=9).state_dict()
    with pytest.raises(ValueError, match=r"seed: state has 9, stream has 8.*global_batch: state has 32, stream has 64"):
        ds.batches(64, shuffle_buffer=128, seed=8, state=state)


def test_too_small_dataset_for_a_batch_is_refused(tmp_path):
    ds = ActivationDataset(write(tmp_path / "ds", indexed(100)))
    with pytest.raises(ValueError, match="100 tokens, fewer than one global batch of 128"):
        ds.batches(64, world_size=2, rank=0)


# --- writer: crash, resume, refusals ---------------------------------------------------------


def test_crashed_capture_resumes_to_the_same_dataset(tmp_path):
    acts = torch.randn(400, 4, generator=torch.Generator().manual_seed(4))
    write(tmp_path / "clean", acts)
    path = tmp_path / "crashed"
    with (
        pytest.raises(RuntimeError, match="killed"),
        ActivationWriter(
            path,
            d_in=4,
            dtype="float32",
            hook_name="blocks.0.hook_mlp_out",
            model_id="toy",
            context_length=CTX,
            tokens_per_shard=64,
            metadata={"seed": 3},
        ) as w,
    ):
        w.add(acts[:150], torch.arange(150))
        raise RuntimeError("killed")
    (path / "acts-00002.safetensors.tmp").write_bytes(b"half a shard")  # a write cut short
    (path / "acts-00002.safetensors").write_bytes(b"written after the manifest was")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["total_tokens"] == 128 and not manifest["complete"]
    with pytest.warns(UserWarning, match="incomplete capture"):
        assert ActivationDataset(path).num_tokens == 128

    w = ActivationWriter(
        path,
        d_in=4,
        dtype="float32",
        hook_name="blocks.0.hook_mlp_out",
        model_id="toy",
        context_length=CTX,
        tokens_per_shard=64,
        metadata={"seed": 3},
        resume=True,
    )
    assert w.tokens_written == 128
    assert sorted(p.name for p in path.iterdir()) == [
        "acts-00000.safetensors",
        "acts-00001.safetensors",
        "manifest.json",
    ]
    with w:
        for i in range(w.tokens_written, 400, 37):
            w.add(acts[i : i + 37], torch.arange(i, min(i + 37, 400)))
    clean = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    assert json.loads((path / "manifest.json").read_text())["shards"] == clean["shards"]  # same bytes, same hashes
    ActivationDataset(path, verify=True)


def test_resuming_a_complete_dataset_rewrites_its_partial_last_shard(tmp_path):
    acts = torch.randn(150, 4)
    write(tmp_path, acts)
    w = ActivationWriter(
        tmp_path,
        d_in=4,
        dtype="float32",
        hook_name="blocks.0.hook_mlp_out",
        model_id="toy",
        context_length=CTX,
        tokens_per_shard=64,
        resume=True,
    )
    assert w.tokens_written == 128 and not (tmp_path / "acts-00002.safetensors").exists()
    w.add(acts[128:], torch.arange(128, 150))
    w.close()
    ds = ActivationDataset(tmp_path, verify=True)
    assert torch.equal(torch.cat([ds.shard(i)["acts"] for i in range(3)]), acts)


def test_resume_with_different_settings_lists_every_differing_field(tmp_path):
    write(tmp_path, torch.randn(100, 4))
    with pytest.raises(ValueError) as err:
        ActivationWriter(
            tmp_path,
            d_in=5,
            dtype="float16",
            hook_name="blocks.0.hook_mlp_out",
            model_id="toy",
            context_length=CTX,
            tokens_per_shard=64,
            metadata={"seed": 4},
            resume=True,
        )
    msg = str(err.value)
    assert "d_in: dataset has 4, capture has 5" in msg and "dtype: dataset has 'float32', capture has 'float16'" in msg
    assert "metadata['seed']: dataset has 3, capture has 4" in msg
    assert "hook_name" not in msg and "context_length" not in msg and "tokens_per_shard" not in msg


def test_existing_dataset_is_not_overwritten_without_resume(tmp_path):
    write(tmp_path, torch.randn(100, 4))
    with pytest.raises(ValueError, match="already holds an activation dataset.*continue it with --resume"):
        write(tmp_path, torch.randn(100, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_activation_names_shard_and_row(tmp_path, bad):
    acts = torch.randn(100, 4)
    with ActivationWriter(
        tmp_path, d_in=4, dtype="float32", hook_name="h", model_id="m", context_length=CTX, tokens_per_shard=64
    ) as w:
        w.add(acts[:60], torch.arange(60))
        acts[70, 2] = bad  # dataset token 70 = shard 1, row 6; row 10 of the second batch
        with pytest.raises(
            ValueError,
            match=r"non-finite activation \(NaN/Inf\) in row 10 of this batch: "
            r"dataset token 70, shard 1 \(acts-00001.safetensors\) row 6",
        ):
            w.add(acts[60:], torch.arange(60, 100))
        assert w.tokens_written == 0  # the first 60 rows wait in the buffer; nothing of the bad batch was kept


def test_float16_overflow_is_reported_as_non_finite(tmp_path):
    acts = torch.randn(10, 4)
    acts[3, 1] = 1e6
    w = ActivationWriter(
        tmp_path, d_in=4, dtype="float16", hook_name="h", model_id="m", context_length=CTX, tokens_per_shard=64
    )
    with pytest.raises(ValueError, match=r"overflows float16.*shard 0 \(acts-00000.safetensors\) row 3"):
        w.add(acts, torch.arange(10))


def test_writer_argument_checks(tmp_path):
    kw = dict(d_in=4, dtype="float32", hook_name="h", model_id="m", context_length=CTX)
    with pytest.raises(
        ValueError, match=r"tokens_per_shard \(100\) must be a multiple of context_length \(8\).*try 96"
    ):
        ActivationWriter(tmp_path / "a", tokens_per_shard=100, **kw)
    with pytest.raises(ValueError, match="dtype 'float64' is not supported"):
        ActivationWriter(tmp_path / "b", tokens_per_shard=64, **{**kw, "dtype": "float64"})
    w = ActivationWriter(tmp_path / "c", tokens_per_shard=64, **kw)
    with pytest.raises(ValueError, match=r"acts must have shape \[n, 4\]"):
        w.add(torch.randn(5, 3), torch.arange(5))
    with pytest.raises(ValueError, match=r"tokens must have shape \[5\]"):
        w.add(torch.randn(5, 4), torch.arange(6))


# --- validated open ----------------------------------------------------------------------


def edit_manifest(path: Path, **changes):
    file = path / "manifest.json"
    manifest = json.loads(file.read_text())
    manifest.update(changes)
    file.write_text(json.dumps(manifest))
    return manifest


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest.json not found.*not an activation dataset folder"):
        ActivationDataset(tmp_path)
    write(tmp_path / "blocks.0.hook_mlp_out", torch.randn(70, 4))
    with pytest.raises(FileNotFoundError, match=r"one dataset per hook.*blocks.0.hook_mlp_out"):
        ActivationDataset(tmp_path)


def test_wrong_format_version_is_refused(tmp_path):
    write(tmp_path, torch.randn(70, 4))
    edit_manifest(tmp_path, format_version=7)
    with pytest.raises(ValueError, match="format_version is 7 but this version of monosemantic reads format_version 1"):
        ActivationDataset(tmp_path)


def test_truncated_shard_is_named_with_expected_hash_without_verify(tmp_path):
    write(tmp_path, torch.randn(200, 4))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    shard = tmp_path / "acts-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ValueError) as err:
        ActivationDataset(tmp_path)
    assert "acts-00001.safetensors is truncated" in str(err.value)
    assert manifest["shards"][1]["sha256"] in str(err.value)


def test_a_shard_is_hash_checked_when_first_read_by_default(tmp_path):
    """A float set to 3e38 inside shard 2: the dataset opens (the structure is intact), shards 0 and 1
    read, and the first read of shard 2 names it with the expected hash. verify=False is the opt-out."""
    write(tmp_path, torch.randn(200, 4))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    shard = tmp_path / "acts-00002.safetensors"
    tensors = load_file(shard)
    tensors["acts"][5, 1] = 3e38
    save_file(tensors, shard)  # a well-formed shard with the same layout and other bytes
    ds = ActivationDataset(tmp_path)
    ds.shard(0), ds.shard(1)
    with pytest.raises(ValueError) as err:
        ds.shard(2)
    assert "acts-00002.safetensors is corrupt" in str(err.value)
    assert f"expects {manifest['shards'][2]['sha256']}" in str(err.value)
    with pytest.raises(ValueError, match="acts-00002.safetensors is corrupt"):
        list(ActivationDataset(tmp_path).sequential(64))
    with pytest.raises(ValueError, match="acts-00002.safetensors is corrupt"):
        ActivationDataset(tmp_path, verify=False).verify()  # the explicit full check
    assert ActivationDataset(tmp_path, verify=False).shard(2)["acts"][5, 1] == 3e38


def test_swapped_shards_and_duplicated_entries_are_caught(tmp_path):
    write(tmp_path, torch.randn(256, 4))  # four full shards of 64 rows: same size and layout
    a, b = tmp_path / "acts-00000.safetensors", tmp_path / "acts-00001.safetensors"
    first, second = a.read_bytes(), b.read_bytes()
    a.write_bytes(second)
    b.write_bytes(first)
    with pytest.raises(ValueError, match="acts-00000.safetensors is corrupt"):
        ActivationDataset(tmp_path).shard(0)
    a.write_bytes(first)
    b.write_bytes(second)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    edit_manifest(tmp_path, shards=[manifest["shards"][0], *manifest["shards"][:3]])
    with pytest.raises(ValueError, match=r"\['acts-00000.safetensors'\] are listed more than once"):
        ActivationDataset(tmp_path)


def test_header_offsets_that_lie_are_caught_without_hashing(tmp_path):
    """Swap the byte ranges the header gives for two tensors of one shard (file size unchanged)."""
    write(tmp_path, torch.randn(128, 4))
    shard = tmp_path / "acts-00001.safetensors"
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["tokens"]["data_offsets"], header["positions"]["data_offsets"] = (
        header["acts"]["data_offsets"],
        header["tokens"]["data_offsets"],
    )
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    text = text.ljust(n)  # the same header length, padded with spaces as safetensors allows
    shard.write_bytes(raw[:8] + text + raw[8 + n :])
    with pytest.raises(ValueError, match="acts-00001.safetensors is truncated or corrupt: tensor"):
        ActivationDataset(tmp_path, verify=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(context_length=0), "field 'context_length' must be a positive integer, found 0"),
        (dict(d_in="4"), "field 'd_in' must be a positive integer, found '4'"),
        (dict(shards=None), "field 'shards' must be a list, found NoneType"),
        (
            dict(shards=[{"file": "../../x", "sha256": "0", "tokens": 8}]),
            r"shards\[0\].file' is '../../x', which points outside",
        ),
        (dict(shards=[{"file": "acts-00000.safetensors"}]), r"shards\[0\] needs a string 'file' and 'sha256'"),
    ],
)
def test_malformed_manifest_fields_are_named(tmp_path, changes, message):
    write(tmp_path, torch.randn(70, 4))
    edit_manifest(tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        ActivationDataset(tmp_path)


def test_missing_shard_is_named(tmp_path):
    write(tmp_path, torch.randn(200, 4))
    (tmp_path / "acts-00001.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"acts-00001.safetensors \(listed in .*manifest.json.*\) is missing"):
        ActivationDataset(tmp_path)


def test_shape_and_dtype_mismatch_between_manifest_and_shard(tmp_path):
    write(tmp_path, torch.randn(100, 4))
    edit_manifest(tmp_path, d_in=5)
    with pytest.raises(
        ValueError, match=r"acts-00000.safetensors: 'acts' is F32 \[64, 4\] but manifest.json implies F32 \[64, 5\]"
    ):
        ActivationDataset(tmp_path)
    edit_manifest(tmp_path, d_in=4, dtype="bfloat16")
    with pytest.raises(ValueError, match=r"'acts' is F32 \[64, 4\] but manifest.json implies BF16 \[64, 4\]"):
        ActivationDataset(tmp_path)
    manifest = edit_manifest(tmp_path, dtype="float32")
    manifest["shards"][0]["tokens"] = 65
    edit_manifest(tmp_path, shards=manifest["shards"], total_tokens=101)
    with pytest.raises(ValueError, match=r"'acts' is F32 \[64, 4\] but manifest.json implies F32 \[65, 4\]"):
        ActivationDataset(tmp_path)
    edit_manifest(tmp_path, total_tokens=99)
    with pytest.raises(ValueError, match="total_tokens is 99 but its shards hold 101"):
        ActivationDataset(tmp_path)


def test_shard_reads_are_memory_mapped(tmp_path):
    write(tmp_path, torch.randn(200, 4))
    ds = ActivationDataset(tmp_path)
    a, b = ds.shard(1)["acts"], ds.shard(1)["acts"]
    assert a.data_ptr() == b.data_ptr()  # one mapping, no copies
    assert np.isclose(a.untyped_storage().nbytes(), (tmp_path / "acts-00001.safetensors").stat().st_size)


def test_sequential_reads_every_row_in_order(tmp_path):
    acts = indexed(300)
    ds = ActivationDataset(write(tmp_path, acts))
    batches = list(ds.sequential(64))
    assert [len(b) for b in batches] == [64, 64, 64, 64, 44]
    assert torch.equal(torch.cat(batches), acts)
    assert torch.equal(torch.cat(list(ds.sequential(64, max_tokens=100))), acts[:100])


def test_background_write_errors_surface_in_the_caller(tmp_path, monkeypatch):
    w = ActivationWriter(
        tmp_path, d_in=4, dtype="float32", hook_name="h", model_id="m", context_length=CTX, tokens_per_shard=16
    )

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sae.files.os.replace", disk_full)
    w.add(torch.randn(16, 4), torch.arange(16))  # the shard fails in the background...
    with pytest.raises(OSError, match="no space left on the device .* could not write acts-00000.safetensors"):
        w.close()  # ...and the error reaches the caller, naming the shard
    assert w.tokens_written == 0


def test_rows_are_stored_as_added_even_if_the_caller_reuses_its_tensor(tmp_path):
    acts = torch.randn(100, 4, generator=torch.Generator().manual_seed(7))
    batch = torch.empty(25, 4)
    with ActivationWriter(
        tmp_path, d_in=4, dtype="float32", hook_name="h", model_id="m", context_length=CTX, tokens_per_shard=32
    ) as w:
        for i in range(0, 100, 25):
            batch.copy_(acts[i : i + 25])
            w.add(batch, torch.arange(i, i + 25))
        batch.fill_(float("nan"))
    ds = ActivationDataset(tmp_path, verify=True)
    assert torch.equal(torch.cat([ds.shard(i)["acts"] for i in range(ds.num_shards)]), acts)


@pytest.mark.parametrize("dtype,torch_dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_odd_numbers_of_16_bit_values_keep_every_tensor_aligned(tmp_path, dtype, torch_dtype):
    """3-wide 16-bit rows in shards of 33 rows (and a last one of 2): 99 values of 2 bytes would leave
    int32 tokens after them unaligned, so those shards put tokens and positions first."""
    acts = torch.randn(101, 3, generator=torch.Generator().manual_seed(8))
    with ActivationWriter(
        tmp_path, d_in=3, dtype=dtype, hook_name="h", model_id="m", context_length=3, tokens_per_shard=33
    ) as w:
        for i in range(0, 101, 10):
            w.add(acts[i : i + 10], torch.arange(i, min(i + 10, 101)))
    ds = ActivationDataset(tmp_path, verify=True)
    assert [s["tokens"] for s in ds.manifest["shards"]] == [33, 33, 33, 2]
    assert torch.equal(torch.cat([ds.shard(i)["acts"] for i in range(4)]), acts.to(torch_dtype))
    assert torch.equal(torch.cat([ds.shard(i)["tokens"] for i in range(4)]), torch.arange(101, dtype=torch.int32))
    for i in range(4):
        official = load_file(tmp_path / f"acts-{i:05d}.safetensors")
        assert torch.equal(official["acts"], ds.shard(i)["acts"]) and torch.equal(
            official["positions"], ds.shard(i)["positions"]
        )


def test_leaving_by_an_exception_leaves_no_temp_file(tmp_path):
    with (
        pytest.raises(RuntimeError, match="killed"),
        ActivationWriter(
            tmp_path, d_in=4, dtype="float32", hook_name="h", model_id="m", context_length=CTX, tokens_per_shard=64
        ) as w,
    ):
        w.add(torch.randn(100, 4), torch.arange(100))
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts-00000.safetensors", "manifest.json"]


@pytest.mark.parametrize("expected", [300, 400, 200, 100])
def test_expected_tokens_right_or_wrong_gives_the_same_bytes(tmp_path, expected):
    """The hint only decides whether the last shard is hashed in one pass; the files are the same."""
    acts = torch.randn(300, 5, generator=torch.Generator().manual_seed(9))
    write(tmp_path / "plain", acts)
    write(tmp_path / "hinted", acts, expected_tokens=expected)
    manifests = [json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("plain", "hinted")]
    assert manifests[0]["shards"] == manifests[1]["shards"] and len(manifests[0]["shards"]) == 5
    for entry in manifests[0]["shards"]:
        assert (tmp_path / "plain" / entry["file"]).read_bytes() == (tmp_path / "hinted" / entry["file"]).read_bytes()
    ActivationDataset(tmp_path / "hinted", verify=True)
