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
