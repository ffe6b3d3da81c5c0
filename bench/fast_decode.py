"""How the fast JPEG path's predictions agree with a full-size decode, on the bundled model.

    python bench/fast_decode.py [--per-size 40]

See tests/agreement.py: rendered scenes enlarged to photo sizes as JPEGs; the fast path
(DCT-scaled decode, OpenCV resize) against a full-size decode with the same resize ("full")
and against the pre-processing before the fast path ("reference": full-size decode, Pillow).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.agreement import measure  # noqa: E402

SIZES = [(640, 480), (1280, 720), (1920, 1080), (4032, 3024)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--per-size", type=int, default=40)
    args = p.parse_args()
    print(
        "| fast path vs | photos | class-map pixels | background label | shapes labels "
        "| depth mean abs diff | edges mean abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in SIZES:
        for other, a in measure([size], args.per_size).items():
            print(
                f"| {other} ({size[0]}x{size[1]}) | {a.photos} | {a.class_pixels:.2%} "
                f"| {a.background_label:.1%} | {a.shapes_labels:.1%} "
                f"| {a.depth_mean_abs_m:.4f} m ({a.depth_rel:.2%}) | {a.edges_mean_abs:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
