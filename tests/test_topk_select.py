"""Exact top-k selection: the same values as torch.topk on fresh random rows, ties, edge widths."""

import pytest
import torch

from sae.topk_select import kernel_applies, topk_indices


def _top_values(pre: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return pre.gather(1, indices).sort(dim=1).values


@pytest.mark.parametrize("d,k", [(4096, 32), (4100, 32), (1000, 7), (129, 1), (256, 64), (513, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_same_values_as_torch_topk(d, k, dtype):
    g = torch.Generator().manual_seed(d * 31 + k)
    pre = (torch.randn(300, d, generator=g) + torch.randn(d, generator=g)).to(dtype)  # per-column offsets, like b_enc
    assert kernel_applies(pre, k)
    got = topk_indices(pre, k)
    assert got.shape == (300, k) and got.dtype == torch.int64
    assert bool((got.sort(dim=1).values.diff(dim=1) > 0).all())  # no column twice
    assert torch.equal(_top_values(pre, got), pre.topk(k, dim=1).values.sort(dim=1).values)


def test_no_column_chosen_twice_and_all_in_range():
    pre = torch.randn(200, 2048, generator=torch.Generator().manual_seed(3))
    got = topk_indices(pre, 40)
    assert int(got.min()) >= 0 and int(got.max()) < 2048
    assert all(len(set(row.tolist())) == 40 for row in got)


def test_ties_give_the_same_values():
    g = torch.Generator().manual_seed(5)
    pre = torch.randint(0, 6, (256, 1024), generator=g).float()  # every row full of ties at its threshold
    got = topk_indices(pre, 50)
    assert all(len(set(row.tolist())) == 50 for row in got)
    assert torch.equal(_top_values(pre, got), pre.topk(50, dim=1).values.sort(dim=1).values)


def test_one_or_several_threads_choose_the_same():
    pre = torch.randn(1000, 3000, generator=torch.Generator().manual_seed(9))
    one, two = topk_indices(pre, 24), topk_indices(pre, 24, threads=2)
    assert torch.equal(one.sort(dim=1).values, two.sort(dim=1).values)


def test_narrow_rows_and_other_dtypes_use_torch_topk():
    g = torch.Generator().manual_seed(11)
    narrow = torch.randn(50, 100, generator=g)
    assert not kernel_applies(narrow, 32)
    assert torch.equal(_top_values(narrow, topk_indices(narrow, 32)), narrow.topk(32, dim=1).values.sort(dim=1).values)
    half = torch.randn(50, 1024, generator=g).half()
    assert not kernel_applies(half, 8)
    assert torch.equal(_top_values(half, topk_indices(half, 8)), half.topk(8, dim=1).values.sort(dim=1).values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_row_is_named(dtype):
    pre = torch.randn(300, 1024, generator=torch.Generator().manual_seed(2)).to(dtype)
    pre[123, 500] = float("nan")
    with pytest.raises(ValueError, match="row 123 .*NaN"):
        topk_indices(pre, 16)


def test_k_out_of_range():
    with pytest.raises(ValueError, match="k must be in 1..64"):
        topk_indices(torch.randn(4, 64), 65)


def test_infinities_are_ranked_not_refused():
    pre = torch.randn(200, 1024, generator=torch.Generator().manual_seed(4))
    pre[7, 3], pre[7, 900], pre[8, 10] = float("inf"), float("-inf"), float("-inf")
    got = topk_indices(pre, 16)
    assert torch.equal(_top_values(pre, got), pre.topk(16, dim=1).values.sort(dim=1).values)
    assert 3 in got[7].tolist()


def test_bfloat16_rows_of_negative_values_and_ties_rank_as_floats():
    """bfloat16 rows go through their bit patterns: negative values (sign-magnitude bits) and the
    many ties of 8 significant bits must still give torch.topk's values."""
    g = torch.Generator().manual_seed(6)
    pre = (-(torch.rand(256, 2048, generator=g) * 4) - 0.5).bfloat16()  # every entry negative
    pre[:, 100] = -0.0
    pre[3, 7] = float("-inf")
    got = topk_indices(pre, 20)
    assert torch.equal(_top_values(pre, got), pre.topk(20, dim=1).values.sort(dim=1).values)
    assert bool((got == 100).any(dim=1).all())  # -0.0 outranks every negative value


def test_without_numba_the_package_imports_and_torch_topk_serves(tmp_path):
    """numba can lag a new Python release: with `import numba` failing, SAEs still select exactly."""
    import subprocess
    import sys

    script = """
import sys

class NoNumba:
    def find_spec(self, name, path=None, target=None):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("no numba wheel for this Python")

sys.meta_path.insert(0, NoNumba())
import torch
from sae.topk_select import kernel_applies, topk_indices
import sae.architectures.topk, sae.architectures.batchtopk

pre = torch.randn(256, 512, generator=torch.Generator().manual_seed(3))
assert not kernel_applies(pre, 8)
chosen = pre.gather(1, topk_indices(pre, 8)).sort(1).values
assert torch.equal(chosen, pre.topk(8, dim=1).values.sort(1).values)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
