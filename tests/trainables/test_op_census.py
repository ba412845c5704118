"""The CPU guards of the GPU path: the census counts what it should (host syncs, FLOPs by dtype,
kernel-level operations), and the GPU default design's training step and sampler evaluation
have no host sync, no FLOP outside tensor-core precisions, one forward pass and one graph."""

import pytest
import torch

from trainables.tools.op_census import census_of, step_guards

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_census_sees_a_host_sync_and_counts_conv_flops_in_closed_form():
    x = torch.randn(2, 3, 8, 8)
    assert sum(census_of(lambda: x.sum().item()).host_syncs.values()) == 1
    assert sum(census_of(lambda: x.nonzero()).host_syncs.values()) == 1
    assert sum(census_of(lambda: x * 2).host_syncs.values()) == 0
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        census = census_of(lambda: conv(x))
        half = census_of(lambda: torch.nn.functional.conv2d(x.half(), conv.weight.half(), padding=1))
    # 2 FLOPs per multiply-add: batch x out channels x pixels x in channels x 3 x 3
    assert census.flops == {"torch.float32": 2 * 2 * 4 * 64 * 3 * 9}
    assert census.fp32_share == 1.0 and half.fp32_share == 0.0
    # views are not kernels; a copy is
    assert census_of(lambda: x.view(2, -1).t()).ops == 0 and census_of(lambda: x.clone()).ops == 1


@pytest.fixture(scope="module")
def guards():
    return step_guards(ngf=8, batch=4, num_levels=4, sample_batch=2)


def test_the_gpu_default_step_has_no_sync_and_no_fp32_flop(guards):
    default = guards["gpu default (fp16)"]
    for part in ("train_step", "sampler_eval"):
        assert default[part]["host_syncs"] == 0, default[part]["host_sync_ops"]
        assert default[part]["fp32_flop_share"] == 0.0 and default[part]["gflop"] > 0
    assert default["forward_passes"] == 1
    # the old design splits the batch: two forward passes, almost twice the kernels, and IEEE fp32
    split = guards["bf16>=0.1 split"]
    assert split["forward_passes"] == 2 and split["train_step"]["fp32_flop_share"] > 0.25
    assert split["train_step"]["ops"] > 1.7 * default["train_step"]["ops"]
    assert guards["fp32"]["train_step"]["fp32_flop_share"] == 1.0
    # the same arithmetic is counted whatever the precision
    assert split["train_step"]["gflop"] == pytest.approx(default["train_step"]["gflop"])


def test_the_training_forward_is_one_graph_without_breaks(guards):
    # what torch.compile(fullgraph=True) compiles on a GPU, traced by dynamo alone
    assert guards["graph_breaks"]["graphs"] == 1 and guards["graph_breaks"]["graph_breaks"] == 0
    assert guards["graph_breaks"]["ops"] > 1000
