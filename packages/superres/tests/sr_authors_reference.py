"""The authors' FFNet-SR (norm=None) forward pass computed from their state-dict layout."""

import re

import torch
import torch.nn.functional as F


def read_tsv(path):
    shapes = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith("key\t") or not line.strip():
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return shapes


def random_state(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(s, generator=gen)
        * (0.3 / max(1, int(torch.tensor(s[1:]).prod())) ** 0.5 if len(s) > 1 else 0.05)
        for k, s in shapes.items()
    }


def authors_forward(sd, x, scale):
    def conv(p, t, groups=1):
        w = sd[p + ".weight"]
        return F.conv2d(t, w, sd[p + ".bias"], padding=w.shape[-1] // 2, groups=groups)

    h = conv("proj", x)
    depth = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    c = h.shape[1]
    for i in range(depth):
        t = f"body.{i}.token_mixer"
        h = h + conv(f"{t}.3", F.gelu(conv(f"{t}.1", conv(f"{t}.0", h), c)), c)
        m = f"body.{i}.channel_mixer"
        h = h + conv(f"{m}.3", F.gelu(conv(f"{m}.1", conv(f"{m}.0", h, c))))
    out = conv("conv_bef_up", h) + torch.repeat_interleave(x, scale**2, dim=1)
    return F.pixel_shuffle(out, scale)
