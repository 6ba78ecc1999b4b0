"""The authors' forecaster checkpoints (TSLib ``checkpoint.pth``) load into ``FFNetForecaster`` and
forecast what their forward pass forecasts from the same file."""

import pytest
import torch
from forecaster_authors_reference import authors_forward_from_state, authors_state_dict

from metamixer.timeseries.weights import load_authors_forecaster


@pytest.mark.parametrize(
    "m,d,ffn_ratio,blocks,affine", [(7, 8, 2, 1, False), (3, 4, 8, 2, True), (1, 6, 1, 1, False)]
)
def test_an_authors_checkpoint_forecasts_like_their_forward_pass(
    tmp_path, m, d, ffn_ratio, blocks, affine
):
    state = authors_state_dict(
        m, d, ffn_ratio, seq_len=48, horizon=12, blocks=blocks, affine=affine
    )
    torch.save(state, tmp_path / "checkpoint.pth")
    model = load_authors_forecaster(tmp_path / "checkpoint.pth").eval()
    assert (model.num_vars, model.seq_len, model.horizon, model.dim) == (m, 48, 12, d)
    assert len(model.blocks) == blocks
    x = torch.randn(5, 48, m) * 2 + 3
    with torch.no_grad():
        torch.testing.assert_close(
            model(x), authors_forward_from_state(state, x), atol=1e-4, rtol=1e-4
        )


def test_checkpoints_it_cannot_build_are_refused_in_one_line(tmp_path):
    state = authors_state_dict(3, 4, 2, seq_len=48, horizon=12)
    cases = {
        "decomposition": {k.replace("model.", "model_res.", 1): v for k, v in state.items()},
        "more than one stage": {**state, "model.stages.1.blocks.0.token_mixer.dw1.weight": torch.zeros(1)},
        "small_kernel_merged": {**state, "model.stages.0.blocks.0.channel_mixer.dw.lkb_reparam.weight": torch.zeros(1)},
        "not in the authors' forecaster layout": {**state, "model.extra.weight": torch.zeros(1)},
        "does not fit": {**state, "model.head.linear.bias": torch.zeros(5)},
    }  # fmt: skip
    for words, bad in cases.items():
        torch.save(bad, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match=words) as err:
            load_authors_forecaster(tmp_path / "bad.pth")
        assert "\n" not in str(err.value).strip() or words == "does not fit"
