"""A mixer written outside the packages, as a user would: registered by name, then selected from
configs and sweeps of every modality (``--import gated_conv_mixer``)."""

from metamixer.core import MetaMixer, MixerContext, register_token_mixer


@register_token_mixer("gated_conv", acts=("sigmoid", "tanh"))
def gated_conv(c: MixerContext) -> MetaMixer:
    """``sigmoid(depthwise(query(x)))``: static depthwise keys as a gate, no value interaction."""
    return MetaMixer(
        c.dim,
        query=c.ops.query(c.dim, norm=c.query_norm is not None),
        key=c.ops.depthwise(c.dim, c.kernel_size),
        act=c.activation("sigmoid"),
        value=None,
        act_axis=c.ops.channel_axis,
    )
