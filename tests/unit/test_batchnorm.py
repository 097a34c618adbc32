"""BatchNorm statistics groups (`train.bn_group`): the same normalisation on any number of workers as
one process normalising consecutive chunks of the global batch (DataParallel's replicas)."""

from __future__ import annotations

import pytest
import torch
from bnfixtures import reference_ghost_bn, reference_running, small_model
from torch import nn

from oaecmlr.config import BatchNormPlan, plan_batchnorm
from oaecmlr.engine.batchnorm import GroupBatchNorm, apply_plan


def test_plan_arithmetic():
    assert plan_batchnorm(0, 256, 4) == BatchNormPlan("whole", 256)
    assert plan_batchnorm(256, 256, 1) == plan_batchnorm(512, 256, 1) == BatchNormPlan("whole", 256)
    assert plan_batchnorm(64, 256, 1) == BatchNormPlan("local", 64, groups_per_rank=4)
    assert plan_batchnorm(64, 256, 4) == BatchNormPlan("local", 64, groups_per_rank=1)
    assert plan_batchnorm(64, 256, 8) == BatchNormPlan("ranks", 64, ranks_per_group=2)
    with pytest.raises(ValueError, match="does not divide the global batch of 256"):
        plan_batchnorm(48, 256, 1)
    with pytest.raises(ValueError, match="must divide one another"):
        plan_batchnorm(64, 192, 2)  # 96 images per worker: neither divides the other
    with pytest.raises(ValueError, match=">= 0"):
        plan_batchnorm(-1, 256, 1)


@pytest.mark.parametrize("shape", [(24, 5, 4, 3), (24, 7)])
@pytest.mark.parametrize("running", ["first", "mean"])
def test_group_batchnorm_equals_per_chunk_normalisation(shape, running):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64).float() * 3 + 1
    dy = torch.randn(*shape)
    bn = GroupBatchNorm(shape[1], group_size=8, running=running)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    weight, bias = bn.weight.detach().clone().requires_grad_(True), bn.bias.detach().clone().requires_grad_(True)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = bn(xa)
    expected = reference_ghost_bn(xb, weight, bias, 8)
    (out * dy).sum().backward()
    (expected * dy).sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad, weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad, bias.grad, rtol=1e-4, atol=1e-5)
    bn(x)
    rm, rv = reference_running(x, 8, running, steps=2)
    torch.testing.assert_close(bn.running_mean, rm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, rv, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 2
    bn.eval()  # eval mode: the running statistics, like any BatchNorm
    plain = nn.BatchNorm1d(shape[1]) if len(shape) == 2 else nn.BatchNorm2d(shape[1])
    plain.load_state_dict(bn.state_dict())
    plain.eval()
    torch.testing.assert_close(bn(x), plain(x))


def test_local_plan_keeps_the_state_dict_and_bn_group_zero_changes_nothing():
    model = small_model()
    keys = list(model.state_dict())
    apply_plan(model, plan_batchnorm(8, 32, 1), world_size=1, rank=0, cuda=False)
    assert [type(m).__name__ for m in model if "Norm" in type(m).__name__] == ["GroupBatchNorm", "GroupBatchNorm"]
    assert list(model.state_dict()) == keys
    small_model().load_state_dict(model.state_dict())  # loads into a plain model
    plain, untouched = small_model(), small_model()
    apply_plan(untouched, plan_batchnorm(0, 32, 1), world_size=1, rank=0, cuda=False)
    assert [type(m) for m in untouched] == [type(m) for m in plain]
    x = torch.randn(32, 3, 6, 4)
    assert torch.equal(untouched(x), plain(x))


# ------------------------------------------------------------------ several workers (gloo)
