"""Flat parameters and gradients: views into one buffer each, so backward writes the wire format."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from distributed_a3c.rl.grads import clip_grad_norm_, flat_to_tensors, flatten_parameters_


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Tanh(), nn.Linear(3, 1))


def _loss(module: nn.Module, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 5, generator=g)
    y = torch.randn(16, 1, generator=g)
    return (module(x) - y).pow(2).mean()


def test_flatten_keeps_weights_and_order():
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    flat = flatten_parameters_(net)
    assert flat.numel == sum(p.numel() for p in before)
    torch.testing.assert_close(flat.weights, torch.cat([p.flatten() for p in before]), rtol=0, atol=0)
    for p, b in zip(net.parameters(), before, strict=True):
        assert p.shape == b.shape
        assert torch.equal(p, b)
    torch.testing.assert_close(flat.grads, torch.zeros_like(flat.weights), rtol=0, atol=0)


def test_parameters_are_views_so_load_updates_the_module():
    net = _net()
    flat = flatten_parameters_(net)
    new = torch.arange(flat.numel, dtype=torch.float64) / 100  # another dtype: load_ converts
    flat.load_(new)
    torch.testing.assert_close(torch.cat([p.detach().flatten() for p in net.parameters()]), new.float())
    for p in net.parameters():
        assert p.data_ptr() >= flat.weights.data_ptr()
        assert p.data_ptr() < flat.weights.data_ptr() + flat.weights.numel() * flat.weights.element_size()
    # ... and an in-place change of a parameter shows in the flat buffer.
    with torch.no_grad():
        next(net.parameters()).fill_(-4.0)
    assert bool((flat.weights[: next(net.parameters()).numel()] == -4.0).all())


def test_backward_writes_straight_into_flat_grads():
    reference = _net(3)
    net = copy.deepcopy(reference)
    flat = flatten_parameters_(net)
    grads_buffer = flat.grads
    expected = torch.autograd.grad(_loss(reference), list(reference.parameters()))
    flat.zero_grad_()
    _loss(net).backward()
    assert flat.grads is grads_buffer
    torch.testing.assert_close(flat.grads, torch.cat([g.flatten() for g in expected]))
    for p in net.parameters():
        assert p.grad.data_ptr() >= flat.grads.data_ptr()
    # zero_grad_ clears it; a second backward accumulates into the same buffer, as autograd does.
    flat.zero_grad_()
    assert not bool(flat.grads.any())
    _loss(net).backward()
    _loss(net).backward()
    torch.testing.assert_close(flat.grads, 2 * torch.cat([g.flatten() for g in expected]))


def test_flatten_skips_frozen_parameters_and_rejects_empty_modules():
    net = _net()
    net[0].weight.requires_grad_(False)
    flat = flatten_parameters_(net)
    assert flat.numel == sum(p.numel() for p in net.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="no trainable parameters"):
        flatten_parameters_(nn.Tanh())


def test_flat_to_tensors_is_the_inverse_of_cat():
    like = [torch.randn(2, 3), torch.randn(4), torch.randn(1, 1, 5)]
    flat = torch.cat([t.flatten() for t in like])
    out = flat_to_tensors(flat, like)
    assert [o.shape for o in out] == [t.shape for t in like]
    for o, t in zip(out, like, strict=True):
        assert torch.equal(o, t)
    out[1].fill_(9.0)  # views, not copies
    assert bool((flat[6:10] == 9.0).all())


@pytest.mark.parametrize("delta", [-1, 1])
def test_flat_to_tensors_size_mismatch_raises(delta):
    like = [torch.randn(2, 3), torch.randn(4)]
    with pytest.raises(ValueError, match=f"has {10 + delta} elements, the tensors need 10"):
        flat_to_tensors(torch.randn(10 + delta), like)


@pytest.mark.parametrize("max_norm", [0.05, 0.5, 1.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    reference = _net(5)
    net = copy.deepcopy(reference)
    flat = flatten_parameters_(net)
    _loss(reference, 7).backward()
    _loss(net, 7).backward()
    torch_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
    norm = clip_grad_norm_(flat.grads, max_norm)
    assert norm == pytest.approx(float(torch_norm), rel=1e-6)
    torch.testing.assert_close(flat.grads, torch.cat([p.grad.flatten() for p in reference.parameters()]))
    # The parameters' .grad still alias the clipped buffer.
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in net.parameters()]), flat.grads)


def test_clip_grad_norm_zero_disables_clipping():
    grads = torch.tensor([3.0, 4.0])
    assert clip_grad_norm_(grads, 0.0) == pytest.approx(5.0)
    assert torch.equal(grads, torch.tensor([3.0, 4.0]))
    assert clip_grad_norm_(grads, 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(grads.norm(), torch.tensor(1.0), rtol=1e-5, atol=1e-5)
