"""Zero-variance group filter and overlong handling (DAPO)."""

from __future__ import annotations

import pytest
import torch

from iquest_rl.algos.filters import apply_overlong, nonzero_variance_groups, soft_overlong_penalty


def test_nonzero_variance_groups():
    r = torch.tensor([1.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.3])
    g = torch.tensor([5, 5, 5, 2, 2, 2, 9])  # group 9 has one member: no variance
    assert nonzero_variance_groups(r, g).tolist() == [True, True, True, False, False, False, False]
    near = torch.tensor([1.0, 1.0 + 1e-6], dtype=torch.float64)
    assert nonzero_variance_groups(near, torch.tensor([0, 0]), atol=1e-5).tolist() == [False, False]
    assert nonzero_variance_groups(near, torch.tensor([0, 0])).tolist() == [True, True]
    with pytest.raises(ValueError, match=r"\(n,\)"):
        nonzero_variance_groups(r, g[:3])


def test_soft_overlong_penalty_hand_values():
    # L = 10, W = 4: free up to 6, linear to −1 at 10, −1 beyond
    lengths = torch.tensor([3, 6, 7, 8, 10, 11])
    torch.testing.assert_close(soft_overlong_penalty(lengths, 10, 4), torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0]))
    torch.testing.assert_close(soft_overlong_penalty(lengths, 10, 0), torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -1.0]))
    with pytest.raises(ValueError, match="overlong_penalty_tokens"):
        soft_overlong_penalty(lengths, 10, 11)


def test_apply_overlong_modes():
    r = torch.tensor([1.0, 0.5, 0.0])
    lengths = torch.tensor([4, 9, 10])
    trunc = torch.tensor([False, False, True])
    out, keep = apply_overlong(r, lengths, trunc, "none", 10)
    assert torch.equal(out, r) and keep.all()
    out, keep = apply_overlong(r, lengths, trunc, "mask", 10)
    assert torch.equal(out, r) and keep.tolist() == [True, True, False]
    out, keep = apply_overlong(r, lengths, trunc, "penalize", 10, window=0)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5, -1.0]))
    out, keep = apply_overlong(r, lengths, trunc, "penalize", 10, window=4)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5 - 0.75, -1.0]))
    assert keep.all()
    with pytest.raises(ValueError, match="algo.overlong"):
        apply_overlong(r, lengths, trunc, "drop", 10)
