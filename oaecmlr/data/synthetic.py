"""A procedural pedestrian re-ID dataset drawn in memory: no files, deterministic by seed.

Each identity has a body shape (head, torso, legs), clothing colours from a small shared palette,
a torso texture (plain, stripes, checks), sleeves, shorts and maybe a bag. Each camera has its
own scene (background, floor, clutter), lighting (gain, colour cast, gamma), blur, noise, scale
and framing, and a preferred view (front or back: hair, backpack and straps look different).
Each image adds pose, framing, occlusion and noise jitter. Colours are shared between identities
and shifted by each camera, so colour alone does not separate identities, and the per-camera
scenes pull raw-pixel nearest neighbours towards the query's own camera (see tests/unit/test_synthetic.py).
Drawing is vectorised over a batch of images with soft (anti-aliased) masks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .records import ImageSplits, Record

# Clothing palette (RGB in 0..1), repeated across identities on purpose; dark colours are commoner.
PALETTE = np.array([
    [0.08, 0.08, 0.09], [0.20, 0.20, 0.22], [0.45, 0.45, 0.47], [0.85, 0.85, 0.83], [0.12, 0.16, 0.35],
    [0.25, 0.38, 0.65], [0.62, 0.14, 0.14], [0.20, 0.40, 0.22], [0.62, 0.55, 0.38], [0.40, 0.26, 0.16],
], dtype=np.float32)
PALETTE_WEIGHTS = np.array([4, 3, 2, 2, 3, 2, 1, 1, 1, 1], dtype=np.float64)
SKIN = np.array([[0.93, 0.78, 0.66], [0.80, 0.62, 0.48], [0.60, 0.43, 0.31], [0.38, 0.26, 0.19]], dtype=np.float32)
HAIR = np.array([[0.05, 0.04, 0.04], [0.22, 0.14, 0.08], [0.45, 0.35, 0.22], [0.60, 0.58, 0.55]], dtype=np.float32)
CHUNK = 256  # images drawn per batch; part of the output's definition (noise is drawn per batch)


@dataclass
class SyntheticData:
    """Records plus their images (uint8, N x 3 x H x W, row i is record i of that split)."""

    splits: ImageSplits
    train_images: torch.Tensor
    query_images: torch.Tensor
    gallery_images: torch.Tensor

    def images(self, split: str) -> torch.Tensor:
        return {"train": self.train_images, "query": self.query_images, "gallery": self.gallery_images}[split]


def make_synthetic(num_ids: int = 100, num_cams: int = 4, imgs_per_id_cam: int = 4, height: int = 128,
                   width: int = 64, seed: int = 0, num_query_ids: int = 50, min_cams_per_id: int = 2) -> SyntheticData:
    """Records from `synthetic_splits` (same arguments) and their images drawn at height x width."""
    splits = synthetic_splits(num_ids, num_cams, imgs_per_id_cam, seed, num_query_ids, min_cams_per_id)
    records = splits.train + splits.query + splits.gallery
    pids, camids = np.array([r.pid for r in records]), np.array([r.camid for r in records])

    rng = np.random.default_rng([seed, 1])  # appearance stream, apart from the layout's
    cams = _camera_params(rng, num_cams, height, width)
    per_image = _image_params(rng, pids, camids, _identity_params(rng, num_ids + num_query_ids), cams, height, width)
    gen = torch.Generator().manual_seed(seed)
    with _one_torch_thread():
        pixels = torch.cat([_render(_take(per_image, slice(i, i + CHUNK)), cams["scene"], height, width, gen)
                            for i in range(0, len(records), CHUNK)])
    train, query, gallery = pixels.split([len(splits.train), len(splits.query), len(splits.gallery)])
    return SyntheticData(splits, train, query, gallery)


def synthetic_splits(num_ids: int = 100, num_cams: int = 4, imgs_per_id_cam: int = 4, seed: int = 0,
                     num_query_ids: int = 50, min_cams_per_id: int = 2) -> ImageSplits:
    """The records of `make_synthetic`, without drawing images.

    Train ids 0..num_ids-1 and test ids after them (disjoint), each seen by a random subset of at
    least min_cams_per_id cameras, imgs_per_id_cam images per camera. For a test id, one of its
    cameras gives the query images and the others the gallery, so every query has a cross-camera match.
    """
    if num_cams < 2 or not 2 <= min_cams_per_id <= num_cams:
        raise ValueError("need num_cams >= 2 and 2 <= min_cams_per_id <= num_cams")
    rng = np.random.default_rng([seed, 0])
    records: dict[str, list[Record]] = {"train": [], "query": [], "gallery": []}
    for pid in range(num_ids + num_query_ids):
        seen = np.sort(rng.choice(num_cams, rng.integers(min_cams_per_id, num_cams + 1), replace=False))
        query_cam = rng.choice(seen)
        for cam in seen:
            split = "train" if pid < num_ids else ("query" if cam == query_cam else "gallery")
            for _ in range(imgs_per_id_cam):
                path = f"synthetic/{split}/{len(records[split]):06d}.png"
                records[split].append(Record(path, pid, int(cam)))
    return ImageSplits("synthetic", records["train"], records["query"], records["gallery"], root=None)


@contextmanager
def _one_torch_thread():
    """Draw on one thread: the many small elementwise ops gain little from more, and on a busy
    machine torch's thread pool made drawing up to 10x slower (measured on 2 shared cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _identity_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    def colour(weights=PALETTE_WEIGHTS):
        idx = rng.choice(len(PALETTE), n, p=weights / weights.sum())
        return np.clip(PALETTE[idx] + rng.normal(0, 0.03, (n, 3)), 0, 1).astype(np.float32)

    return {
        "upper": colour(), "lower": colour(PALETTE_WEIGHTS * [2, 2, 1, 0.5, 3, 3, 0.3, 0.3, 1.5, 1]),
        "texture_colour": colour(), "bag_colour": colour(), "shoe": colour(PALETTE_WEIGHTS * [3, 2, 1, 1, 1, 0, 0, 0, 0, 1]),
        "skin": SKIN[rng.integers(0, len(SKIN), n)], "hair": HAIR[rng.choice(len(HAIR), n, p=[0.5, 0.3, 0.1, 0.1])],
        "texture": rng.choice(4, n, p=[0.4, 0.25, 0.15, 0.2]),  # plain, horizontal/vertical stripes, checks
        "texture_freq": rng.uniform(2.5, 7, n),
        "head": rng.uniform(0.115, 0.145, n), "torso": rng.uniform(0.29, 0.35, n),
        "torso_w": rng.uniform(0.09, 0.14, n), "leg_w": rng.uniform(0.038, 0.058, n),
        "short_sleeves": rng.random(n) < 0.35, "shorts": rng.random(n) < 0.2,
        "bag": rng.choice(3, n, p=[0.5, 0.25, 0.25]),  # none, backpack, shoulder bag
    }


def _camera_params(rng: np.random.Generator, n: int, height: int, width: int) -> dict[str, np.ndarray]:
    # A fixed scene per camera: base colour, vertical gradient, floor, low-frequency clutter.
    y = np.linspace(0, 1, height, dtype=np.float32)[None, None, :, None]
    base = rng.uniform(0.4, 0.6, (n, 3, 1, 1)).astype(np.float32)
    floor = rng.uniform(0.35, 0.55, (n, 3, 1, 1)).astype(np.float32)
    floor_y = rng.uniform(0.55, 0.85, (n, 1, 1, 1))
    scene = base + rng.uniform(-0.25, 0.25, (n, 1, 1, 1)) * (y - 0.5)
    scene = np.where(y > floor_y, floor, scene)
    clutter = _clutter(torch.from_numpy(rng.normal(0, 1, (n, 4, max(height // 10, 2), max(width // 10, 2)))).float(),
                       height, width).numpy()
    scene = np.clip(scene + rng.uniform(0.02, 0.06, (n, 1, 1, 1)) * clutter, 0, 1).astype(np.float32)
    return {
        "scene": torch.from_numpy(scene),
        "gain": rng.uniform(0.7, 1.3, n), "cast": rng.uniform(0.85, 1.15, (n, 3)), "gamma": rng.uniform(0.85, 1.15, n),
        "blur": rng.uniform(0.0, 1.4, n) * height / 128, "noise": rng.uniform(0.01, 0.05, n),
        "scale": rng.uniform(0.74, 0.9, n), "offset": rng.uniform(-0.03, 0.03, n), "front": rng.uniform(0.1, 0.9, n),
    }


def _image_params(rng: np.random.Generator, pids: np.ndarray, camids: np.ndarray, people: dict, cams: dict,
                  height: int, width: int) -> dict[str, np.ndarray]:
    n = len(pids)
    p = {k: v[pids] for k, v in people.items()}
    c = {k: v[camids] for k, v in cams.items() if k != "scene"}
    size = c["scale"] * rng.uniform(0.94, 1.06, n) * height  # person height in pixels
    return {
        **p, "cam": camids, "size": size,
        "cx": width * (0.5 + rng.uniform(-0.07, 0.07, n)),
        "bottom": height * (0.97 + c["offset"] + rng.uniform(-0.02, 0.02, n)),
        "front": rng.random(n) < c["front"], "flip": rng.random(n) < 0.5,
        "leg_spread": rng.uniform(0.0, 0.05, n) * size, "arm_swing": rng.uniform(-0.025, 0.025, n) * size,
        "phase": rng.uniform(0, 2 * np.pi, n),
        "gain": c["gain"] * rng.uniform(0.88, 1.12, n), "cast": c["cast"], "gamma": c["gamma"],
        "blur": c["blur"] * rng.uniform(0.8, 1.2, n), "noise": c["noise"],
        "occluded": rng.random(n) < 0.15, "occluder_y": rng.uniform(0.6, 0.85, n) * height,
        "occluder_colour": rng.uniform(0.1, 0.8, (n, 3)), "scene_shift": rng.normal(0, 0.12, (n, 1)) + rng.normal(0, 0.04, (n, 3)),
    }


def _take(params: dict[str, np.ndarray], rows: slice) -> dict[str, torch.Tensor]:
    """Rows of every parameter as float tensors shaped to broadcast against B x C x H x W."""
    out = {}
    for key, value in params.items():
        t = torch.as_tensor(np.asarray(value[rows]))
        t = t.long() if key == "cam" else t.float()
        out[key] = t.reshape(len(t), -1, 1, 1) if t.dim() == 2 else t.reshape(-1, 1, 1, 1)
    return out


def _clutter(noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Smooth background clutter, mostly grey: channel 0 of noise is brightness, 1..3 a weaker tint."""
    noise = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    return noise[:, :1] + 0.3 * noise[:, 1:]


def _ramp(t: torch.Tensor) -> torch.Tensor:
    return (t + 0.5).clamp(0, 1)


def _rect(x, y, x0, x1, y0, y1):
    """Soft mask of the axis-aligned box [x0, x1] x [y0, y1] (pixel units, one-pixel edges)."""
    return (_ramp(x - x0) * _ramp(x1 - x)) * (_ramp(y - y0) * _ramp(y1 - y))  # one full-size product


def _ellipse(x, y, cx, cy, rx, ry):
    d = torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return _ramp((1 - d) * torch.minimum(rx, ry))


def _paint(img, mask, colour):
    """Blend colour (B x 3 x 1 x 1 or B x 3 x H x W) over img where mask (B x 1 x H x W) is on, in place."""
    return img.lerp_(colour.expand_as(img), mask.expand_as(img))


def _render(p: dict[str, torch.Tensor], scenes: torch.Tensor, height: int, width: int,
            gen: torch.Generator) -> torch.Tensor:
    batch = len(p["size"])
    y = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1) + 0.5
    x = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width) + 0.5
    s, cx, bottom = p["size"], p["cx"], p["bottom"]
    top = bottom - s
    front, side = p["front"], torch.where(p["flip"] > 0, -1.0, 1.0)

    clutter = _clutter(torch.randn((batch, 4, max(height // 8, 2), max(width // 8, 2)), generator=gen), height, width)
    img = (scenes[p["cam"].view(-1)] + p["scene_shift"] + 0.07 * clutter).clamp(0, 1)

    # Body geometry (pixels).
    head_h = p["head"] * s
    torso_top, torso_bottom = top + head_h * 0.95, top + head_h + p["torso"] * s
    tw, lw = p["torso_w"] * s, p["leg_w"] * s
    shoe_h = 0.035 * s
    leg_x = lw + 0.01 * s + p["leg_spread"]

    # Legs, hips and shoes: trousers, or shorts over bare legs.
    legs = torch.maximum(_rect(x, y, cx - leg_x - lw, cx - leg_x + lw, torso_bottom - 0.02 * s, bottom),
                         _rect(x, y, cx + leg_x - lw, cx + leg_x + lw, torso_bottom - 0.02 * s, bottom))
    hips = _rect(x, y, cx - leg_x - lw, cx + leg_x + lw, torso_bottom - 0.03 * s, torso_bottom + 0.06 * s)
    trouser_end = torch.where(p["shorts"] > 0, torso_bottom + 0.45 * (bottom - torso_bottom), bottom)
    img = _paint(img, legs, p["skin"])
    img = _paint(img, torch.maximum(legs * (y < trouser_end), hips), p["lower"])
    img = _paint(img, legs * (y > bottom - shoe_h), p["shoe"])

    # Torso with texture in torso coordinates.
    u, v = (x - cx) / tw, (y - torso_top) / (torso_bottom - torso_top)
    freq, phase = p["texture_freq"], p["phase"]
    stripes_h = _ramp(2 * torch.sin(2 * np.pi * freq * v + phase))
    stripes_v = _ramp(2 * torch.sin(np.pi * freq * u + phase))
    checks = _ramp(2 * torch.sin(2 * np.pi * freq * v) * torch.sin(np.pi * freq * u + phase))
    kind = p["texture"]
    pattern = torch.where(kind == 1, stripes_h, torch.where(kind == 2, stripes_v, torch.where(kind == 3, checks, 0)))
    torso_colour = p["upper"] * (1 - pattern) + p["texture_colour"] * pattern
    img = _paint(img, _rect(x, y, cx - tw, cx + tw, torso_top, torso_bottom), torso_colour)

    # Arms: skin, with long or short sleeves.
    aw, swing = 0.035 * s, p["arm_swing"]
    arm_end = torso_bottom + 0.03 * s
    arms = torch.maximum(_rect(x, y, cx - tw - 2 * aw + swing, cx - tw + swing, torso_top + 0.01 * s, arm_end),
                         _rect(x, y, cx + tw - swing, cx + tw + 2 * aw - swing, torso_top + 0.01 * s, arm_end))
    sleeve_end = torch.where(p["short_sleeves"] > 0, torso_top + 0.35 * (arm_end - torso_top), arm_end)
    img = _paint(img, arms, p["skin"])
    img = _paint(img, arms * (y < sleeve_end), p["upper"])

    # Head: the face shows from the front, only hair from the back.
    head_cy, ry = top + head_h / 2, head_h / 2
    head = _ellipse(x, y, cx, head_cy, 0.8 * ry, ry)
    img = _paint(img, head, p["skin"])
    hair_line = torch.where(front > 0, top + 0.35 * head_h, top + head_h)
    img = _paint(img, head * (y < hair_line), p["hair"])

    # Bags: a backpack is a big block from the back and two straps from the front; a shoulder bag hangs at one side.
    backpack = (p["bag"] == 1).float()
    pack = _rect(x, y, cx - 0.8 * tw, cx + 0.8 * tw, torso_top + 0.05 * s, torso_top + 0.6 * (torso_bottom - torso_top))
    straps = torch.maximum(_rect(x, y, cx - 0.6 * tw, cx - 0.45 * tw, torso_top, torso_top + 0.15 * s),
                           _rect(x, y, cx + 0.45 * tw, cx + 0.6 * tw, torso_top, torso_top + 0.15 * s))
    img = _paint(img, backpack * torch.where(front > 0, straps, pack), p["bag_colour"])
    bag_x = cx + side * (tw + 0.07 * s)
    shoulder_bag = _rect(x, y, bag_x - 0.06 * s, bag_x + 0.06 * s, torso_bottom - 0.08 * s, torso_bottom + 0.06 * s)
    img = _paint(img, (p["bag"] == 2).float() * shoulder_bag, p["bag_colour"])

    # Occluder (a bench, a car bonnet...) across the lower part of some images.
    img = _paint(img, p["occluded"] * _rect(x, y, -1, width + 1, p["occluder_y"], height + 1), p["occluder_colour"])

    # Camera: lighting, colour cast, gamma, blur, sensor noise.
    img = (img * p["gain"] * p["cast"]).clamp(0, 1) ** p["gamma"]
    img = _blur(img, p["blur"].view(-1))
    img = img + torch.randn(img.shape, generator=gen) * p["noise"]
    return (img * 255).round().clamp(0, 255).to(torch.uint8)


def _blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (a grouped convolution, one group per channel)."""
    radius = int(np.ceil(3 * float(sigma.max()))) if len(sigma) else 0
    if radius == 0:
        return img
    batch, chans, height, width = img.shape
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(chans, 0)  # (B*C) x K
    flat = img.reshape(1, batch * chans, height, width)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=batch * chans)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=batch * chans)
    return flat.reshape(batch, chans, height, width)
