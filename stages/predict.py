"""Classify new images with the trained model.

    python -m stages.predict IMAGE [IMAGE ...] [--model models/model.npz] [--top 3] [--json]

Not a pipeline stage: a command for users, built on the same core and model file.
Each image (PNG or JPEG, any size) is read with Pillow (which matplotlib brings),
turned upright by its EXIF orientation, flattened onto white if it has
transparency (RGBA, LA, palette), converted to RGB (greyscale is repeated into
three channels), center-cropped to a square and resized to 32x32 with Pillow's
antialiasing LANCZOS filter. It is then normalized with exactly the statistics
the model was trained with (they travel inside the model file) and classified.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from numpynet.data import normalize
from numpynet.model import from_arrays
from stages._io import StageError, load_npz, run_stage

SIZE = 32


def load_image(path: Path) -> np.ndarray:
    """Read an image file as a CIFAR row: (3072,) uint8 in channel-plane order."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except FileNotFoundError as err:
        raise StageError(f"{path}: no such file") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise StageError(f"cannot read {path} as an image ({err}); give a PNG or JPEG file") from err
    if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(img, dtype=np.uint8)            # (32, 32, 3)
    return pixels.transpose(2, 0, 1).reshape(-1)        # channel planes: R, then G, then B


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files")
    parser.add_argument("--model", type=Path, default=Path("models/model.npz"), help="model file (default: %(default)s)")
    parser.add_argument("--top", type=int, default=3, help="how many classes to show per image (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    try:
        network, meta = from_arrays(load_npz(args.model))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise StageError(f"cannot load the model {args.model} ({err}); run `dvc repro train` or pass --model") from err
    names = meta["class_names"]
    if args.top < 1:
        raise StageError(f"--top {args.top}: give at least 1")
    rows = np.stack([load_image(p) for p in args.images])          # every file is checked before any output
    proba = network.predict_proba(normalize(rows, meta["normalization"]))
    results = []
    for path, p in zip(args.images, proba):
        order = np.argsort(-p, kind="stable")[:args.top]
        results.append({"image": str(path), "predictions": [
            {"class": names[i], "probability": round(float(p[i]), 6)} for i in order]})
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return
    for r in results:
        shown = ", ".join(f"{q['class']} {q['probability']:.3f}" for q in r["predictions"])
        print(f"{r['image']}: {shown}")


if __name__ == "__main__":
    run_stage("predict", main)
