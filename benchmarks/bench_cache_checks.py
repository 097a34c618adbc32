"""What the image cache's checks cost at the start of a run (issue 26): the checksum of a cache
entry, verified on every read of the cache, and the header read of every image that
`check_inputs` does before a run folder exists when the cache does not hold the images yet. Each
beside what it saves or guards: reading the entry from disk, decoding the images.

    python benchmarks/bench_cache_checks.py
    python benchmarks/bench_cache_checks.py --images /work/shared/data/market-subset --count 3000
"""

from __future__ import annotations

import argparse
import glob
import os
import time

import numpy as np

from oaecmlr.data.cache import check_images, checksum, decode_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="/work/shared/data/market-subset", help="a folder of .jpg images")
    parser.add_argument("--count", type=int, default=3000, help="images to read headers of and decode")
    args = parser.parse_args()

    # Market-1501's training split in the cache: 12,936 images at 256 x 128 and at the +cpu 128 x 64.
    for height, width in ((128, 64), (256, 128)):
        pixels = np.random.default_rng(0).integers(0, 256, (12936, 3, height, width), dtype=np.uint8)
        started = time.perf_counter()
        checksum(pixels)
        seconds = time.perf_counter() - started
        print(f"checksum of {pixels.nbytes / 1e9:.2f} GB ({height} x {width}): {seconds:.2f} s "
              f"({pixels.nbytes / 1e9 / seconds:.2f} GB/s, {os.cpu_count()} threads)")
        del pixels

    paths = sorted(glob.glob(os.path.join(args.images, "**", "*.jpg"), recursive=True))[:args.count]
    if not paths:
        print(f"no .jpg under {args.images}: header reads not measured")
        return
    started = time.perf_counter()
    check_images(paths, 8, 8, cache_dir=False)
    headers = (time.perf_counter() - started) / len(paths)
    started = time.perf_counter()
    for path in paths:
        decode_image(path, 128, 64)
    decode = (time.perf_counter() - started) / len(paths)
    print(f"header read: {headers * 1e3:.2f} ms an image; decode at 128 x 64: {decode * 1e3:.2f} ms an image "
          f"({headers / decode:.0%} of a decode; {len(paths)} images, one thread each)")


if __name__ == "__main__":
    main()
