import math

import pytest
import torch
import torch.nn.functional as F

from oaecmlr.data import augment
from oaecmlr.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugParams,
    apply_params,
    eval_batch,
    sample_params,
    train_batch,
)

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def images(b=6, h=24, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def oracle_one(img, out_size, flip, oy, ox, pad, erase, u, pos, attempts=100):
    """Per-sample reference: torchvision-style steps, Cluster Contrast RandomErasing loop in Python."""
    h, w = out_size
    x = img.float()
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x[None], size=out_size, mode="bilinear", align_corners=False)[0]
    if flip:
        x = x.flip(-1)
    padded = torch.zeros(3, h + 2 * pad, w + 2 * pad)
    padded[:, pad : pad + h, pad : pad + w] = x
    x = padded[:, oy : oy + h, ox : ox + w]
    x = (x / 255 - MEAN) / STD
    if erase:
        for a in range(attempts):
            target = (0.02 + (0.4 - 0.02) * float(u[a, 0])) * (h * w)
            ratio = 0.3 + (1 / 0.3 - 0.3) * float(u[a, 1])
            eh = int(round(math.sqrt(target * ratio)))
            ew = int(round(math.sqrt(target / ratio)))
            if ew < w and eh < h:
                x1 = int(float(pos[0]) * (h - eh + 1))
                y1 = int(float(pos[1]) * (w - ew + 1))
                x[:, x1 : x1 + eh, y1 : y1 + ew] = MEAN
                break
    return x


def oracle(imgs, out_size, seed, flip_p, pad, erase_p, attempts=100):
    """Same generator draws, in sample_params' documented order."""
    g, b = gen(seed), imgs.shape[0]
    flip = torch.rand(b, generator=g) < flip_p
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=g)
    erase = torch.rand(b, generator=g) < erase_p
    u = torch.rand(b, attempts, 2, generator=g, dtype=torch.float64)
    pos = torch.rand(b, 2, generator=g, dtype=torch.float64)
    return torch.stack(
        [
            oracle_one(imgs[i], out_size, flip[i], *off[i].tolist(), pad, erase[i], u[i], pos[i], attempts)
            for i in range(b)
        ]
    )


@pytest.mark.parametrize("in_size", [(24, 12), (16, 10)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_train_batch_matches_per_sample_oracle(in_size, seed):
    imgs = images(8, *in_size, seed=seed)
    out = train_batch(imgs, (24, 12), gen(seed), pad=4)
    ref = oracle(imgs, (24, 12), seed, 0.5, 4, 0.5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_shapes_dtypes_layout():
    imgs = images(5, 30, 14)
    out = train_batch(imgs, (24, 12), gen())
    assert out.shape == (5, 3, 24, 12) and out.dtype == torch.float32 and out.is_contiguous()
    out = train_batch(imgs, (24, 12), gen(), channels_last=True, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    ev = eval_batch(imgs, (24, 12), channels_last=True)
    assert ev.shape == (5, 3, 24, 12) and ev.is_contiguous(memory_format=torch.channels_last)


def test_eval_values_normalised():
    imgs = torch.full((2, 3, 8, 4), 200, dtype=torch.uint8)
    out = eval_batch(imgs, (16, 8))  # a constant image stays constant under bilinear resize
    torch.testing.assert_close(out, ((200 / 255 - MEAN) / STD).expand(2, 3, 16, 8))


def test_all_off_is_resize_and_normalise():
    for size in [(24, 12), (20, 10)]:
        imgs = images(4, *size)
        out = train_batch(imgs, (24, 12), gen(), flip_p=0, pad=0, erase_p=0)
        assert torch.equal(out, eval_batch(imgs, (24, 12)))


def test_flip_exact():
    imgs = images(4)
    out = train_batch(imgs, (24, 12), gen(), flip_p=1, pad=0, erase_p=0)
    assert torch.equal(out, eval_batch(imgs, (24, 12)).flip(-1))


@pytest.mark.parametrize("flip", [False, True])
def test_pad_crop_known_offset(flip):
    imgs = images(2)
    pad, offs = 10, [(0, 0), (13, 20)]
    none = torch.zeros(2, 4, dtype=torch.long)
    params = AugParams(torch.tensor([flip, flip]), torch.tensor(offs), none)
    out = apply_params(imgs, (24, 12), params, pad=pad)
    for i, (oy, ox) in enumerate(offs):
        ref = oracle_one(imgs[i], (24, 12), flip, oy, ox, pad, False, None, None)
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=1e-6)
    # offset (0, 0): top-left 10 x 10 is padding, i.e. -mean/std after normalisation
    torch.testing.assert_close(out[0, :, :10, :10], (-MEAN / STD).expand(3, 10, 10))


def test_erasing_box_filled_with_mean_and_area_in_bounds():
    imgs = torch.zeros(400, 3, 64, 32, dtype=torch.uint8)  # normalised value -mean/std != mean
    p = sample_params(400, (64, 32), gen(3), flip_p=0, pad=0, erase_p=1)
    out = apply_params(imgs, (64, 32), p, pad=0)
    filled = (out == MEAN).all(1)  # (B, H, W)
    top, left, bh, bw = p.erase.unbind(1)
    assert (bh > 0).all() and (bw > 0).all()  # 64 x 32: a box always fits within 100 attempts
    for i in range(400):
        box = torch.zeros(64, 32, dtype=torch.bool)
        box[top[i] : top[i] + bh[i], left[i] : left[i] + bw[i]] = True
        assert torch.equal(filled[i], box)
    frac = (bh * bw).double() / (64 * 32)
    assert frac.min() >= 0.02 * 0.8 and frac.max() <= 0.4 * 1.2  # rounding of h and w
    ratio = bh.double() / bw
    assert ratio.min() >= 0.3 * 0.8 and ratio.max() <= (1 / 0.3) * 1.2
    assert (top + bh <= 64).all() and (left + bw <= 32).all()


def test_no_fitting_box_means_no_erasing(monkeypatch):
    monkeypatch.setattr(augment, "ERASE_ATTEMPTS", 1)  # one attempt: about half the boxes fit
    imgs = images(200, 6, 3)
    p = sample_params(200, (6, 3), gen(4), erase_p=1)
    fitted = p.erase[:, 2] * p.erase[:, 3] > 0
    assert 0 < fitted.sum() < 200
    out = train_batch(imgs, (6, 3), gen(4), erase_p=1)
    torch.testing.assert_close(out, oracle(imgs, (6, 3), 4, 0.5, 10, 1, attempts=1), atol=1e-5, rtol=1e-5)


def test_probabilities():
    p = sample_params(4000, (64, 32), gen(), flip_p=0.5, pad=10, erase_p=0.5)
    assert 0.45 < p.flip.float().mean() < 0.55
    assert 0.45 < (p.erase[:, 2] > 0).float().mean() < 0.55
    assert p.offset.min() == 0 and p.offset.max() == 20


def test_determinism():
    imgs = images(8)
    a = train_batch(imgs, (24, 12), gen(7))
    b = train_batch(imgs, (24, 12), gen(7))
    c = train_batch(imgs, (24, 12), gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_cpu_generator():
    imgs = images(8, 30, 14)
    cpu = train_batch(imgs, (24, 12), gen(5))
    cuda = train_batch(imgs.cuda(), (24, 12), gen(5))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=1e-4)
    g = torch.Generator(device="cuda").manual_seed(5)
    assert train_batch(imgs.cuda(), (24, 12), g).device.type == "cuda"
