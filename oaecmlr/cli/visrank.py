"""`eval --visrank`: ranked-gallery images in the manner of torchreid's visualize_ranked_results.

One PNG per query: the query, then its top-k gallery images framed green (same identity) or red,
with the rank above each and a legend below. Gallery images of the query's identity and camera are
skipped, as the evaluation skips them. Pillow only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from oaecmlr.errors import CliError

GREEN, RED, BLUE, WHITE, BLACK = (0, 170, 0), (220, 0, 0), (40, 90, 220), (255, 255, 255), (30, 30, 30)
RESAMPLE = getattr(Image, "Resampling", Image)  # Pillow < 9.1 has the names on Image
BORDER, GAP, QUERY_GAP, LABEL_H, MIN_H = 5, 6, 24, 22, 160


def font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def to_pil(image: torch.Tensor, height: int) -> Image.Image:
    """A uint8 3 x H x W tensor as an RGB image scaled to `height` (nearest for small images)."""
    img = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    width = round(img.width * height / img.height)
    small = img.height * 2 <= height
    return img.resize((width, height), RESAMPLE.NEAREST if small else RESAMPLE.BILINEAR)


def ranked(distmat: torch.Tensor, q: int, query, gallery, topk: int) -> list[int]:
    """The top-k gallery indices of query q, skipping same identity and same camera."""
    order = np.argsort(distmat[q].numpy(), kind="stable")
    keep = ~((gallery.pids[order] == query.pids[q]) & (gallery.camids[order] == query.camids[q]))
    return order[keep][:topk].tolist()


def draw_query(q: int, query, gallery, top: list[int]) -> Image.Image:
    height = max(MIN_H, query.images.shape[2])
    cells = [to_pil(query.images[q], height)] + [to_pil(gallery.images[g], height) for g in top]
    cell_w = cells[0].width + 2 * BORDER
    width = QUERY_GAP + len(cells) * (cell_w + GAP) + GAP
    canvas = Image.new("RGB", (width, LABEL_H * 3 + height + 2 * BORDER + GAP), WHITE)
    draw = ImageDraw.Draw(canvas)
    f = font()
    x, y = GAP, LABEL_H
    for i, img in enumerate(cells):
        if i == 0:
            colour, label = BLUE, f"query id {query.pids[q]}"
        else:
            match = gallery.pids[top[i - 1]] == query.pids[q]
            colour, label = (GREEN if match else RED), f"{i}"
            x += QUERY_GAP if i == 1 else 0
        draw.rectangle([x, y, x + cell_w - 1, y + height + 2 * BORDER - 1], fill=colour)
        canvas.paste(img, (x + BORDER, y + BORDER))
        draw.text((x + cell_w / 2, y - 3), label, fill=BLACK, font=f, anchor="md")
        x += cell_w + GAP
    _legend(draw, f, y + height + 2 * BORDER + LABEL_H // 2 + 4, f"query {q}: top-{len(top)} of {len(gallery)} gallery images")
    return canvas


def _legend(draw: ImageDraw.ImageDraw, f, y: int, caption: str) -> None:
    x = GAP
    for colour, text in ((GREEN, "true match"), (RED, "false match")):
        draw.rectangle([x, y - 7, x + 14, y + 7], fill=colour)
        draw.text((x + 20, y), text, fill=BLACK, font=f, anchor="lm")
        x += 30 + int(draw.textlength(text, font=f))
    draw.text((x + 10, y), caption, fill=BLACK, font=f, anchor="lm")


def check_folder(folder: str | Path) -> Path:
    """The --visrank folder, refused (before any work) when it cannot be one."""
    from oaecmlr.cli.common import writable_folder

    return writable_folder(folder, "--visrank")


def write_visrank(distmat: torch.Tensor, query, gallery, folder: str | Path, num: int = 20,
                  topk: int = 10) -> list[Path]:
    """PNG per query for the first `num` queries; returns the files written."""
    folder = check_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--visrank {folder}: cannot create it ({exc.strerror or exc})") from None
    digits = max(3, int(math.log10(max(1, len(query)))) + 1)
    paths = []
    for q in range(min(num, len(query))):
        path = folder / f"query{q:0{digits}d}_id{query.pids[q]}.png"
        draw_query(q, query, gallery, ranked(distmat, q, query, gallery, topk)).save(path)
        paths.append(path)
    return paths
