"""sae.files: atomic writes leave the old file or the whole new one, and JSON errors name the file."""

import errno
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from sae.files import atomic_write, inside, read_json, write_json, write_safetensors, write_text


def test_write_json_round_trips_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "cfg.json"
    write_json(path, {"a": [1, 2], "text": "naïve ↵"})
    assert read_json(path) == {"a": [1, 2], "text": "naïve ↵"}
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.json"]
    write_json(path, {"b": 1}, durable=True)
    assert read_json(path) == {"b": 1} and [p.name for p in tmp_path.iterdir()] == ["cfg.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    path = write_text(tmp_path / "page.html", "old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_read_json_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.json does not exist; re-run `interp label`"):
        read_json(tmp_path / "missing.json", fix="re-run `interp label`")
    path = tmp_path / "cfg.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"cfg\.json is not readable JSON .*; re-run the step that wrote it"):
        read_json(path)
    path.write_text(json.dumps([1]))
    with pytest.raises(ValueError, match="must hold a JSON object, found list"):
        read_json(path)


def test_a_full_disk_names_the_file_and_the_space_needed(tmp_path, monkeypatch):
    """safetensors reports ENOSPC as its own error ("os error 28"), JSON writes as OSError: both become
    an OSError(ENOSPC) naming the file, its size and the space free; no temp file is left."""

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    tensors = {"acts": torch.randn(16, 8)}
    with pytest.raises(OSError, match=r"could not write shard.safetensors \(512 bytes needed, [\d,]+ free\)") as err:
        write_safetensors(tmp_path / "shard.safetensors", tensors)
    assert err.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(OSError, match="could not write manifest.json"):
        write_json(tmp_path / "manifest.json", {"a": 1})


def test_names_inside_an_artifact_may_not_reach_outside_it(tmp_path):
    (tmp_path / "art" / "sub").mkdir(parents=True)
    assert inside(tmp_path / "art", "sub/x.json", source="cfg.json", field="f") == (tmp_path / "art" / "sub" / "x.json")
    for name in ("../outside.json", "../../../../etc/passwd", "/etc/passwd", "sub/../../x", ".", ""):
        with pytest.raises(ValueError, match="cfg.json: field 'f'"):
            inside(tmp_path / "art", name, source="cfg.json", field="f")
    (tmp_path / "art" / "link").symlink_to(tmp_path)  # a link out of the folder resolves outside it
    with pytest.raises(ValueError, match="points outside"):
        inside(tmp_path / "art", "link/secret", source="cfg.json", field="f")


def test_safetensors_files_get_the_mode_of_any_new_file(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = write_safetensors(tmp_path / "t.safetensors", {"w": torch.randn(3, 2)})
    assert written.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
