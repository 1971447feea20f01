"""Batch-wise training augmentation on the training device: the resolution-cue neutraliser, one
affine warp (random-resized crop, rotation, flips, translation) and colour / white-balance jitter,
driven by a recipe (train.RECIPES) and a CPU torch.Generator, so runs are reproducible on any device."""

import math

import torch
import torch.nn.functional as F

from . import data


def _yiq_hue(theta):
    """Per-sample 3x3 RGB matrices rotating hue by theta (radians) in YIQ space."""
    t = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=theta.device)
    ti = torch.linalg.inv(t)
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(len(theta), 3, 3, device=theta.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    return ti @ rot @ t


def shades_of_gray(x, p):
    """Shades of Gray on a [B,3,H,W] batch in 0..1: each channel scaled so the three p-norms equal
    their mean (data.shades_of_gray_gains and the device's preprocess::shades_of_gray_gains)."""
    norm = x.clamp(min=0).pow(p).mean((2, 3)).pow(1.0 / p)
    gains = norm.mean(1, keepdim=True) / norm.clamp(min=1e-6)
    return (x * gains.view(-1, 3, 1, 1)).clamp(max=1.0)


def augment(xb, r, size, g):
    """Augment a uint8 batch [B,3,S,S] (on the training device) -> normalised float [B,3,size,size].
    `g` is a torch.Generator on the CPU (reproducible whatever the device)."""
    B, _, S, _ = xb.shape
    dev = xb.device
    u = lambda lo, hi: (torch.rand(B, generator=g) * (hi - lo) + lo).to(dev)
    x = xb.float() / 255.0
    if r["rescue_res"]:
        # Neutralise resolution as a cue: sources differ (150, 180 px squares vs 600 px photos).
        p = r.get("look_p", 0.85) if r["look"] else 0.5
        hit = torch.rand(B, generator=g) < p
        sizes = torch.randint(96, 193 if r["look"] else 181, (B,), generator=g)
        parts = []
        for i in range(B):
            xi = x[i : i + 1]
            if hit[i]:
                s = min(int(sizes[i]), S)
                xi = F.interpolate(xi, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
                xi = F.interpolate(xi, size=(S, S), mode="bilinear", align_corners=False)
            parts.append(xi)
        x = torch.cat(parts)
    # One affine warp: random-resized crop (area, aspect squash), rotation, flips, translation.
    ang = u(-r["rotate"], r["rotate"]) * math.pi / 180 if r["rotate"] else torch.zeros(B, device=dev)
    if r["rrc"]:
        c = u(r.get("crop_min", 0.35), 1.0).sqrt()
        ar = torch.exp(u(math.log(3 / 4), math.log(4 / 3)))
        sx, sy = (c * ar.sqrt()).clamp(max=1.0), (c / ar.sqrt()).clamp(max=1.0)
    else:
        sx = sy = torch.ones(B, device=dev)
    flip_h = torch.where(torch.rand(B, generator=g) < 0.5, -1.0, 1.0).to(dev)
    flip_v = (
        torch.where(torch.rand(B, generator=g) < 0.5, -1.0, 1.0).to(dev) if r["vflip"] else torch.ones(B, device=dev)
    )
    tx = (torch.rand(B, generator=g).to(dev) * 2 - 1) * (1 - sx)
    ty = (torch.rand(B, generator=g).to(dev) * 2 - 1) * (1 - sy)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack(
        [
            torch.stack([sx * cos * flip_h, -sy * sin * flip_v, tx], 1),
            torch.stack([sx * sin * flip_h, sy * cos * flip_v, ty], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, [B, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if r["brightness"]:
        x = x * u(1 - r["brightness"], 1 + r["brightness"]).view(B, 1, 1, 1)
    if r["jitter"]:
        strong = r["look"]
        gray_w = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
        m = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (x - m) * u(0.7, 1.3).view(B, 1, 1, 1) + m if strong else (x - m) * u(0.8, 1.2).view(B, 1, 1, 1) + m
        gray = (x * gray_w).sum(1, keepdim=True)
        lo, hi = (0.6, 1.4) if strong else (0.8, 1.2)
        x = (x - gray) * u(lo, hi).view(B, 1, 1, 1) + gray
        hue = u(-0.05, 0.05) if strong else u(-0.03, 0.03)
        x = torch.einsum("bij,bjhw->bihw", _yiq_hue(hue * 2 * math.pi), x)
        if strong:
            # White balance / colour processing: per-channel gains and a gamma.
            gains = (torch.rand(B, 3, generator=g) * 0.4 + 0.8).to(dev).view(B, 3, 1, 1)
            x = x * gains
            x = x.clamp(0, 1) ** u(0.75, 1.33).view(B, 1, 1, 1)
    x = x.clamp(0, 1)
    if r.get("colour_constancy"):
        x = shades_of_gray(x, r["colour_constancy"])
    mean = torch.tensor(data.IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    return (x - mean) / std
