"""The analytic FLOP counts of benchmarks/conv_models.py agree with torch.utils.flop_counter
on the plain PyTorch references (skipped without torch)."""
import os
import sys

import pytest
from conftest import torch_or_skip

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import conv_models  # noqa: E402


@pytest.mark.parametrize("name", sorted(conv_models.MODELS))
def test_analytic_flops_match_torch_counter(name):
    torch_or_skip()
    cfg, _, macs, *_ = conv_models.MODELS[name]
    assert 2 * macs(cfg) == conv_models.torch_flops(name, cfg)
