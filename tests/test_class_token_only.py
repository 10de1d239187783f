"""vit_forward(..., all_tokens=False): the last block computes z_L for the class token alone.
Eq. 4 reads only z_L^0, so skipping the other rows must change nothing the model returns."""
import numpy as np
import pytest
from conftest import assert_gradcheck
from test_model import SMALL, model_gradcheck, random_params

from minivit import attention_maps, vit_backward, vit_forward
from minivit.backend import to_device, to_numpy
from minivit.models import get_model
from minivit.workspace import Workspace

B = 3
T = SMALL.num_tokens


def images_and_upstream(cfg=SMALL):
    rng = np.random.default_rng(5)
    x = to_device(rng.standard_normal((B, 3, 16, 16)))
    return x, to_device(rng.standard_normal((B, cfg.num_classes)))


def forward_backward(params, x, G, cfg=SMALL, **kw):
    logits, cache = vit_forward(params, x, cfg, **kw)
    dx, grads = vit_backward(G, cache)
    return logits, cache, dx, grads


def test_gradcheck_whole_model_class_token_only():
    assert_gradcheck(model_gradcheck(SMALL, all_tokens=False))


def test_gradcheck_class_token_only_with_dropout_and_drop_path():
    cfg = SMALL.replace(dropout=0.1, attn_dropout=0.1, drop_path=0.2)
    assert_gradcheck(model_gradcheck(cfg, train=True, max_elems=64, batch=6, all_tokens=False))


@pytest.mark.parametrize("workspace", [False, True])
def test_same_logits_and_gradients_as_all_tokens(workspace):
    params = random_params(SMALL)
    x, G = images_and_upstream()
    ref_logits, ref_cache, ref_dx, ref_grads = forward_backward(params, x, G)
    ws = Workspace() if workspace else None
    for _ in range(2):                           # the second step reuses the buffers
        logits, cache, dx, grads = forward_backward(params, x, G, all_tokens=False,
                                                    workspace=ws)
    np.testing.assert_allclose(to_numpy(logits), to_numpy(ref_logits), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(dx), to_numpy(ref_dx), rtol=1e-10, atol=1e-12)
    assert set(grads) == set(ref_grads)
    for k in grads:
        np.testing.assert_allclose(to_numpy(grads[k]), to_numpy(ref_grads[k]), rtol=1e-10,
                                   atol=1e-12, err_msg=k)
    maps, ref_maps = attention_maps(cache), attention_maps(ref_cache)
    assert maps[-1].shape == (B, SMALL.heads, 1, T)           # the class token's row only
    np.testing.assert_allclose(to_numpy(maps[-1]), to_numpy(ref_maps[-1][:, :, :1]), atol=1e-14)
    assert maps[0].shape == (B, SMALL.heads, T, T)


def test_workspace_allocates_nothing_after_the_first_step():
    """The class-token block's buffers have other shapes than the other blocks': it keeps its
    own, so the shared ones are not reallocated back and forth every step."""
    params = {k: v.astype(np.float32) for k, v in random_params(SMALL).items()}
    x, G = (a.astype(np.float32) for a in images_and_upstream())
    ws = Workspace()
    forward_backward(params, x, G, all_tokens=False, workspace=ws)
    before = {k: id(v) for k, v in ws._pool.items() if k != "__generation__"}
    forward_backward(params, x, G, all_tokens=False, workspace=ws)
    assert {k: id(v) for k, v in ws._pool.items() if k != "__generation__"} == before


@pytest.mark.parametrize("cfg", [SMALL.replace(pool="gap"), SMALL.replace(pos_embed="rel")])
def test_every_token_where_the_head_or_a_bias_needs_it(cfg):
    """Mean pooling reads every token of z_L; the relative-position bias is (T, T) per head."""
    params = random_params(cfg)
    x, _ = images_and_upstream(cfg)
    logits, cache = vit_forward(params, x, cfg, all_tokens=False)
    t = cfg.num_tokens
    assert attention_maps(cache)[-1].shape == (B, cfg.heads, t, t)
    np.testing.assert_array_equal(to_numpy(logits), to_numpy(vit_forward(params, x, cfg)[0]))


def test_training_forward_uses_the_class_token_only():
    params = random_params(SMALL)
    x, _ = images_and_upstream()
    _, cache = get_model("vit").forward(params, x, SMALL, True, None, None)
    assert attention_maps(cache)[-1].shape == (B, SMALL.heads, 1, T)


def test_analysis_refuses_the_class_token_row():
    """Rollout and attention distance need every block's (T, T) map: a cache made with
    all_tokens=False gets a clear error, not a silently broadcast rollout or a NaN distance."""
    from minivit.analysis.distance import mean_attention_distance
    from minivit.analysis.rollout import attention_rollout
    params = random_params(SMALL)
    x, _ = images_and_upstream()
    maps = attention_maps(vit_forward(params, x, SMALL, all_tokens=False)[1])
    with pytest.raises(ValueError, match="all_tokens=True"):
        attention_rollout(maps)
    with pytest.raises(ValueError, match="all_tokens=True"):
        mean_attention_distance(maps, (4, 4), 4)


@pytest.mark.parametrize("queries", [0, T + 1])
def test_attention_queries_out_of_range(queries):
    from minivit.layers import attention_forward
    params = random_params(SMALL)
    attn = {k[len("blocks.0.attn."):]: v for k, v in params.items()
            if k.startswith("blocks.0.attn.")}
    z = np.zeros((1, T, SMALL.dim))
    with pytest.raises(ValueError, match="queries must be in"):
        attention_forward(z, attn, SMALL.heads, queries=queries)
