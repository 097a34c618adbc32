"""Batched train/eval transforms on uint8 image tensors (B, 3, H, W), on the tensors' own device.

The train pipeline is Cluster Contrast's / torchreid's, as a few vectorised ops per batch:
    Resize -> RandomHorizontalFlip(0.5) -> Pad(10) -> RandomCrop -> ToTensor -> Normalize
    -> RandomErasing(0.5, sl=0.02, sh=0.4, r1=0.3, mean=IMAGENET_MEAN)

Randomness: every random number is drawn from `generator` on the generator's own device and the
per-sample parameters are then moved to the images' device in one copy from pinned memory. A CPU
generator therefore gives identical augmentations for CPU and CUDA images and is deterministic
given its seed; a generator on the images' device avoids the copy.

No host sync on a GPU: fill values are Python numbers (a 0-dim CUDA tensor given to `masked_fill_`
is read back with `.item()`), and the normalisation constants are built once per device (a
`torch.tensor(..., device=cuda)` is a blocking copy). The CPU runs the same code.
"""

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ERASE_ATTEMPTS = 100
ERASE_AREA = (0.02, 0.4)  # sl, sh: fraction of the image area
ERASE_R1 = 0.3  # aspect ratio h/w drawn uniformly in [r1, 1/r1]


@dataclass
class AugParams:
    """Per-sample random parameters of one batch."""

    flip: Tensor  # (B,) bool
    offset: Tensor  # (B, 2) int64: crop top, left inside the padded image, in [0, 2*pad]
    erase: Tensor  # (B, 4) int64: top, left, height, width of the erased box; 0 x 0 = none

    def to(self, device) -> "AugParams":
        """On CUDA, in one asynchronous copy of the packed parameters from pinned memory (a pageable
        copy would wait for the GPU to catch up; three copies cost three launches)."""
        device = torch.device(device)
        if device.type != "cuda" or self.flip.device == device:
            return AugParams(*(t.to(device) for t in (self.flip, self.offset, self.erase)))
        return AugParams.unpack(self.pack().pin_memory().to(device, non_blocking=True))

    def pack(self) -> Tensor:
        """The parameters as one (B, 7) int64 tensor: flip, offset (2), erase (4)."""
        return torch.cat([self.flip[:, None].long(), self.offset, self.erase], dim=1)

    @classmethod
    def unpack(cls, packed: Tensor) -> "AugParams":
        return cls(packed[:, 0].bool(), packed[:, 1:3], packed[:, 3:7])


def sample_params(
    batch: int, out_size: tuple[int, int], generator: torch.Generator, flip_p=0.5, pad=10, erase_p=0.5
) -> AugParams:
    """Draw one batch's parameters on the generator's device, always in this order:
    rand(B) flip; randint(0, 2*pad+1, (B, 2)) crop offsets; rand(B) erase; rand(B, ERASE_ATTEMPTS, 2)
    float64 (area fraction, aspect ratio) candidates; rand(B, 2) float64 box position."""
    g, dev = generator, generator.device
    h, w = out_size
    flip = torch.rand(batch, generator=g, device=dev) < flip_p
    offset = torch.randint(0, 2 * pad + 1, (batch, 2), generator=g, device=dev)
    erase = torch.rand(batch, generator=g, device=dev) < erase_p
    u = torch.rand(batch, ERASE_ATTEMPTS, 2, generator=g, device=dev, dtype=torch.float64)
    pos = torch.rand(batch, 2, generator=g, device=dev, dtype=torch.float64)
    # Reference: up to 100 attempts, the first box with bh < h and bw < w wins, else no erasing.
    sl, sh = ERASE_AREA
    area = (sl + (sh - sl) * u[..., 0]) * (h * w)
    ratio = ERASE_R1 + (1 / ERASE_R1 - ERASE_R1) * u[..., 1]
    bh = torch.round(torch.sqrt(area * ratio)).long()  # torch.round is half-to-even, like Python's
    bw = torch.round(torch.sqrt(area / ratio)).long()
    fits = (bh < h) & (bw < w)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # index of the first fitting attempt
    bh, bw = bh.gather(1, first)[:, 0], bw.gather(1, first)[:, 0]
    keep = erase & fits.any(1)
    bh, bw = torch.where(keep, bh, 0), torch.where(keep, bw, 0)
    # random.randint(0, h - bh) inclusive, from one uniform each
    top = torch.minimum((pos[:, 0] * (h - bh + 1)).long(), h - bh)
    left = torch.minimum((pos[:, 1] * (w - bw + 1)).long(), w - bw)
    return AugParams(flip, offset, torch.stack([top, left, bh, bw], 1))


def _resize(x: Tensor, out_size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(out_size):
        return x
    return F.interpolate(
        x.float(), size=tuple(out_size), mode="bilinear", align_corners=False, antialias=False
    )


@lru_cache(maxsize=8)
def _normalisation(device: torch.device) -> tuple[Tensor, Tensor]:
    """(-mean / std, 1 / (255 std)) as (1, 3, 1, 1) float32 tensors on `device`, built once."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (-mean / std).to(device), (1 / (255 * std)).to(device)


def _normalise(x: Tensor) -> Tensor:
    """ToTensor + Normalize: (x / 255 - mean) / std, as one multiply-add."""
    shift, scale = _normalisation(x.device)
    return torch.addcmul(shift, x.float(), scale)


# torchvision's Pad fills the uint8 image with 0, i.e. -mean/std once normalised (in float32).
PAD_FILL = tuple(float(v) for v in _normalisation(torch.device("cpu"))[0].view(3))


def _fill(x: Tensor, mask: Tensor, values: tuple[float, float, float]) -> Tensor:
    """In place: x[b, c, i, j] = values[c] where mask[b, i, j]; Python numbers, so no host sync."""
    for c in range(3):
        x[:, c].masked_fill_(mask, values[c])
    return x


def _layout(x: Tensor, channels_last: bool, dtype: torch.dtype) -> Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(dtype=dtype, memory_format=fmt)


def apply_params(
    images_u8: Tensor,
    out_size: tuple[int, int],
    params: AugParams,
    pad=10,
    channels_last=False,
    dtype=torch.float32,
) -> Tensor:
    """Apply given per-sample parameters (see `train_batch`)."""
    p = params.to(images_u8.device)
    x = _resize(images_u8, out_size)
    b, _, h, w = x.shape
    dev = x.device
    # Flip + pad + crop as one gather: output (i, j) reads source row oy - pad + i and column
    # ox - pad + j of the (flipped) image; positions outside it are the zero padding.
    rows = p.offset[:, :1] - pad + torch.arange(h, device=dev)  # (B, h)
    cols = p.offset[:, 1:] - pad + torch.arange(w, device=dev)  # (B, w)
    cols = torch.where(p.flip[:, None], w - 1 - cols, cols)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    flat = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
    x = x.flatten(2).gather(2, flat.view(b, 1, h * w).expand(b, 3, h * w)).view(b, 3, h, w)
    x = _normalise(x)
    _fill(x, ~inside, PAD_FILL)
    # RandomErasing runs AFTER Normalize in Cluster Contrast / torchreid, with
    # mean=[0.485, 0.456, 0.406]: the box holds those raw values in the *normalised* tensor
    # (not the normalised mean, which would be 0). Replicated exactly.
    top, left, bh, bw = p.erase.unbind(1)
    r, c = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_r = (r >= top[:, None]) & (r < (top + bh)[:, None])  # (B, h)
    in_c = (c >= left[:, None]) & (c < (left + bw)[:, None])  # (B, w)
    _fill(x, in_r[:, :, None] & in_c[:, None, :], IMAGENET_MEAN)
    return _layout(x, channels_last, dtype)


def train_batch(
    images_u8: Tensor,
    out_size: tuple[int, int],
    generator: torch.Generator,
    flip_p=0.5,
    pad=10,
    erase_p=0.5,
    channels_last=False,
    dtype=torch.float32,
) -> Tensor:
    """Random train augmentation of a uint8 batch (B, 3, H, W) -> normalised (B, 3, *out_size).

    Resize (bilinear, no antialias; skipped when already out_size), per-sample horizontal flip,
    zero pad + random crop back to out_size, ImageNet normalisation, random erasing.
    """
    params = sample_params(images_u8.shape[0], out_size, generator, flip_p, pad, erase_p)
    return apply_params(images_u8, out_size, params, pad, channels_last, dtype)


def eval_batch(
    images_u8: Tensor, out_size: tuple[int, int], channels_last=False, dtype=torch.float32
) -> Tensor:
    """Test transform: resize + ImageNet normalisation."""
    return _layout(_normalise(_resize(images_u8, out_size)), channels_last, dtype)
