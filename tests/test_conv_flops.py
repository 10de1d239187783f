"""The analytic FLOP counts of benchmarks/conv_models.py agree with torch.utils.flop_counter
on the plain PyTorch references (skipped without torch)."""
import os
import sys

import pytest
from conftest import torch_or_skip

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import conv_models  # noqa: E402

from minivit.models import get_model  # noqa: E402


@pytest.mark.parametrize("name", sorted(conv_models.MACS))
def test_analytic_flops_match_torch_counter(name):
    torch_or_skip()
    cfg = get_model(name).cifar()
    assert 2 * conv_models.MACS[name](cfg) == conv_models.torch_flops(name, cfg)
