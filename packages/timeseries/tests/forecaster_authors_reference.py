"""The authors' forecasting FFNet forward pass, re-derived with their tensor layout (B, M, D, N).

Takes the weights from our modules but follows the authors' reshapes and permutations, so a
mismatch in our grouping or layout shows up as different forecasts.
"""

import torch
import torch.nn.functional as F


def _bn(bn, x):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _conv_bn(branch, x, groups):
    k = branch.conv.weight.shape[-1]
    return _bn(branch.bn, F.conv1d(x, branch.conv.weight, None, 1, k // 2, groups=groups))


def authors_forward(model, x):
    b, length, m = x.shape
    d, n = model.dim, model.num_patches
    mean = x.mean(1, keepdim=True)
    std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
    x = ((x - mean) / std).permute(0, 2, 1).reshape(b * m, 1, length)
    pad = model.patch_size - model.patch_stride
    x = torch.cat([x, x[:, :, -1:].repeat(1, 1, pad)], dim=-1)
    conv, bn = model.stem
    x = _bn(bn, F.conv1d(x, conv.weight, conv.bias, model.patch_stride)).reshape(b, m, d, n)
    for block in model.blocks:
        token, channel = block[0].mixer, block[1].mixer
        # token mixer
        q = token.query
        er = q[1].out_channels // (d * m)
        y = x.permute(0, 2, 1, 3).reshape(b, d * m, n)
        y = F.gelu(F.conv1d(y, q[1].weight, q[1].bias, groups=d))
        y = y.reshape(b, d, er * m, n).permute(0, 2, 1, 3).reshape(b, -1, n)
        y = F.conv1d(y, q[5].weight, q[5].bias, groups=m)
        y = _bn(q[7], y.reshape(b * m, d, n)).reshape(b, m * d, n)
        k1, k2 = token.key, token.value
        y = F.conv1d(y, k1.weight, k1.bias, padding=k1.weight.shape[-1] // 2, groups=m * d)
        y = F.gelu(y)
        y = F.conv1d(y, k2.weight, k2.bias, padding=k2.weight.shape[-1] // 2, groups=m * d)
        x = x + y.reshape(b, m, d, n)
        # channel mixer
        rep, shared_bn = channel.query[0], channel.query[1]
        y = x.reshape(b, m * d, n)
        y = _conv_bn(rep.large, y, m * d) + _conv_bn(rep.small, y, m * d)
        y = _bn(shared_bn, y.reshape(b * m, d, n)).reshape(b, m * d, n)
        pw1 = channel.key[0]
        dff = pw1.out_channels // m
        y = F.gelu(F.conv1d(y, pw1.weight, pw1.bias, groups=m))
        y = y.reshape(b, m, dff, n).permute(0, 2, 1, 3).reshape(b, dff * m, n)
        pw2 = channel.value[1]
        y = F.conv1d(y, pw2.weight, pw2.bias, groups=d)
        x = x + y.reshape(b, d, m, n).permute(0, 2, 1, 3)
    y = model.head(x.reshape(b, m, d * n)).permute(0, 2, 1)
    return y * std + mean


def authors_parameter_count(
    m, d, ffn_ratio, seq_len, horizon, large=51, small=5, patch=4, stride=2, er=2
):
    n = seq_len // stride
    dff = d * ffn_ratio
    stem = d * patch + d + 2 * d
    token = (
        (d * er * m * m + d * er * m)
        + (m * d * er * d + m * d)
        + 2 * d
        + 2 * (m * d * large + m * d)
    )
    channel = (m * d * large + 2 * m * d) + (m * d * small + 2 * m * d) + 2 * d
    channel += (m * dff * d + m * dff) + (m * d * dff * m // d + m * d)
    head = d * n * horizon + horizon
    return stem + token + channel + head


def authors_state_dict(m, d, ffn_ratio, seq_len, horizon, blocks=1, large=5, small=3, patch=4,
                       stride=2, affine=False, seed=0):  # fmt: skip
    """Random weights with the keys and shapes of the authors' ``Model`` (TSLib ``checkpoint.pth``,
    one stage, four ``dims`` entries, time-feature patch and multi-scale layers included)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    def bn(prefix, c):
        return {f"{prefix}.weight": 1 + r(c), f"{prefix}.bias": r(c),
                f"{prefix}.running_mean": r(c), f"{prefix}.running_var": 1 + r(c).abs(),
                f"{prefix}.num_batches_tracked": torch.tensor(7)}  # fmt: skip

    dff, er, n = d * ffn_ratio, 2, seq_len // stride
    s = {"downsample_layers.0.0.weight": r(d, 1, patch), "downsample_layers.0.0.bias": r(d),
         **bn("downsample_layers.0.1", d), "te_patch.0.weight": r(4, 1, patch),
         "te_patch.0.bias": r(4), "te_patch.1.weight": r(d, 4, 1), "te_patch.1.bias": r(d),
         **bn("te_patch.2", d), "head.linear.weight": r(horizon, d * n),
         "head.linear.bias": r(horizon)}  # fmt: skip
    for i in range(3):
        s |= {**bn(f"downsample_layers.{i + 1}.0", d),
              f"downsample_layers.{i + 1}.1.weight": r(d, d, 2),
              f"downsample_layers.{i + 1}.1.bias": r(d)}  # fmt: skip
    for i in range(4):
        s |= {f"lat_layer.{i}.weight": r(d, d, 1), f"lat_layer.{i}.bias": r(d),
              f"smooth_layer.{i}.weight": r(d, d, 3), f"smooth_layer.{i}.bias": r(d),
              f"up_sample_conv.{i}.0.weight": r(d, d, 2), f"up_sample_conv.{i}.0.bias": r(d),
              **bn(f"up_sample_conv.{i}.1", d)}  # fmt: skip
    for j in range(blocks):
        t, c = f"stages.0.blocks.{j}.token_mixer", f"stages.0.blocks.{j}.channel_mixer"
        s |= {f"{t}.ffnpw1.weight": r(m * d * er, m, 1), f"{t}.ffnpw1.bias": r(m * d * er),
              f"{t}.ffnpw2.weight": r(m * d, d * er, 1), f"{t}.ffnpw2.bias": r(m * d),
              **bn(f"{t}.norm", d), f"{t}.dw1.weight": r(m * d, 1, large),
              f"{t}.dw1.bias": r(m * d), f"{t}.dw2.weight": r(m * d, 1, large),
              f"{t}.dw2.bias": r(m * d), f"{c}.dw.lkb_origin.conv.weight": r(m * d, 1, large),
              **bn(f"{c}.dw.lkb_origin.bn", m * d),
              f"{c}.dw.small_conv.conv.weight": r(m * d, 1, small),
              **bn(f"{c}.dw.small_conv.bn", m * d), **bn(f"{c}.norm", d),
              f"{c}.ffnpw1.weight": r(m * dff, d, 1), f"{c}.ffnpw1.bias": r(m * dff),
              f"{c}.ffnpw2.weight": r(m * d, dff * m // d, 1), f"{c}.ffnpw2.bias": r(m * d)}  # fmt: skip
    if affine:
        s |= {"revin_layer.affine_weight": 1 + r(m), "revin_layer.affine_bias": r(m)}
    return {f"model.{k}": v for k, v in s.items()}


def authors_forward_from_state(state, x, patch=4, stride=2):
    """The authors' forward pass (their reshapes, permutations and groupings) on ``(B, L, M)``,
    reading their checkpoint's keys directly (eval mode: dropout off, BN running statistics)."""
    w = {k.removeprefix("model."): v for k, v in state.items()}

    def bn(prefix, t):
        return F.batch_norm(t, w[f"{prefix}.running_mean"], w[f"{prefix}.running_var"],
                            w[f"{prefix}.weight"], w[f"{prefix}.bias"], False, 0.0, 1e-5)  # fmt: skip

    def conv(prefix, t, groups, bias=True):
        k = w[f"{prefix}.weight"].shape[-1]
        b_ = w[f"{prefix}.bias"] if bias else None
        return F.conv1d(t, w[f"{prefix}.weight"], b_, padding=k // 2, groups=groups)

    b, length, m = x.shape
    mean = x.mean(1, keepdim=True)
    std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
    x = (x - mean) / std
    if "revin_layer.affine_weight" in w:
        x = x * w["revin_layer.affine_weight"] + w["revin_layer.affine_bias"]
    x = x.permute(0, 2, 1).reshape(b * m, 1, length)
    x = torch.cat([x, x[:, :, -1:].repeat(1, 1, patch - stride)], dim=-1)
    x = F.conv1d(x, w["downsample_layers.0.0.weight"], w["downsample_layers.0.0.bias"], stride)
    x = bn("downsample_layers.0.1", x)
    d, n = x.shape[1:]
    x = x.reshape(b, m, d, n)
    j = 0
    while f"stages.0.blocks.{j}.token_mixer.dw1.weight" in w:
        t, c = f"stages.0.blocks.{j}.token_mixer", f"stages.0.blocks.{j}.channel_mixer"
        y = x.permute(0, 2, 1, 3).reshape(b, d * m, n)
        y = F.gelu(conv(f"{t}.ffnpw1", y, d))
        y = y.reshape(b, d, 2 * m, n).permute(0, 2, 1, 3).reshape(b, -1, n)
        y = bn(f"{t}.norm", conv(f"{t}.ffnpw2", y, m).reshape(b * m, d, n)).reshape(b, -1, n)
        y = conv(f"{t}.dw2", F.gelu(conv(f"{t}.dw1", y, m * d)), m * d)
        x = x + y.reshape(b, m, d, n)
        y = x.reshape(b, m * d, n)
        y = bn(f"{c}.dw.lkb_origin.bn", conv(f"{c}.dw.lkb_origin.conv", y, m * d, bias=False))
        y = y + bn(f"{c}.dw.small_conv.bn", conv(f"{c}.dw.small_conv.conv", x.reshape(b, m * d, n),
                                                 m * d, bias=False))  # fmt: skip
        y = bn(f"{c}.norm", y.reshape(b * m, d, n)).reshape(b, m * d, n)
        y = F.gelu(conv(f"{c}.ffnpw1", y, m))
        dff = y.shape[1] // m
        y = y.reshape(b, m, dff, n).permute(0, 2, 1, 3).reshape(b, dff * m, n)
        y = conv(f"{c}.ffnpw2", y, d).reshape(b, d, m, n).permute(0, 2, 1, 3)
        x = x + y
        j += 1
    y = F.linear(x.reshape(b, m, d * n), w["head.linear.weight"], w["head.linear.bias"])
    if "revin_layer.affine_weight" in w:
        y = (y - w["revin_layer.affine_bias"][:, None]) / (
            w["revin_layer.affine_weight"][:, None] + 1e-10
        )
    return y.permute(0, 2, 1) * std + mean
