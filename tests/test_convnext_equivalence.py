"""The ConvNeXt MetaMixer instance reproduces timm's ConvNeXt block with copied weights."""

import pytest
import torch
from timm.models import convnext

from metamixer.core import DenseOps, MetaBlock, convnext_mixer


@pytest.mark.parametrize("dim,kernel", [(32, 7), (24, 5)])
def test_convnext_block_equals_timm(dim, kernel):
    torch.manual_seed(0)
    ref = convnext.ConvNeXtBlock(dim, kernel_size=kernel, ls_init_value=0.3, conv_mlp=False)
    ref.eval()
    with torch.no_grad():
        ref.gamma.normal_()
        ref.norm.weight.normal_()
        ref.norm.bias.normal_()
    ours = MetaBlock(
        dim,
        convnext_mixer(dim, ops=DenseOps(2), kernel_size=kernel, query_norm="layer"),
        layer_scale=1.0,
    ).eval()
    mixer = ours.mixer
    with torch.no_grad():
        mixer.query[0].load_state_dict(ref.conv_dw.state_dict())
        mixer.query[1].load_state_dict(ref.norm.state_dict())
        mixer.key.weight.copy_(ref.mlp.fc1.weight[..., None, None])
        mixer.key.bias.copy_(ref.mlp.fc1.bias)
        mixer.value.weight.copy_(ref.mlp.fc2.weight[..., None, None])
        mixer.value.bias.copy_(ref.mlp.fc2.bias)
        ours.layer_scale.weight.copy_(ref.gamma)
    x = torch.randn(2, dim, 14, 14)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
