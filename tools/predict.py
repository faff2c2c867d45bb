"""Classify new images with the trained model.

    python -m tools.predict IMAGE [IMAGE ...] [--model models/model.npz] [--top 3] [--json]
                            [--flip-tta | --no-flip-tta] [--translate-tta | --no-translate-tta]

Not a pipeline stage: a command for users, built on the same core, model file and loader as
`evaluate`. Each image (PNG, JPEG, ...) is read as `cifar10.images.read_image` describes,
normalized with exactly the statistics the model was trained with (they travel inside the
model file), and classified as `evaluate` classifies: with test-time flip averaging when
params.yaml `evaluate.flip_tta` is true (and translated copies with `evaluate.translate_tta`), so
an image gets the probabilities `evaluate` would give it. --flip-tta / --no-flip-tta and
--translate-tta / --no-translate-tta override params.yaml (both given, it is not read).

The model picks among the classes it was trained on (filter_normalize.classes) and only those:
it has no "none of these", so a photo of a flower gets the nearest trained class, possibly with
a high probability. The output names those classes (--json: "classes").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cifar10.images import ImageError, read_image
from numpynet.data import normalize
from stages import _model_file, evaluate
from stages._io import StageError, quote, run_stage
from stages.params import load
from stages.paths import MODEL, PARAMS_FILE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    parser.add_argument("--model", type=Path, default=MODEL, help="model file (default: %(default)s)")
    parser.add_argument("--top", type=int, default=3, help="how many classes to show per image (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None,
                        help=f"average each image's prediction with its mirror's (default: {PARAMS_FILE} evaluate.flip_tta)")
    parser.add_argument("--translate-tta", action=argparse.BooleanOptionalAction, default=None,
                        help=f"and with its copies moved one pixel (default: {PARAMS_FILE} evaluate.translate_tta)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.top < 1:
        raise StageError(f"--top {args.top}: give at least 1")
    given = {"flip_tta": args.flip_tta, "translate_tta": args.translate_tta}
    tta = given if None not in given.values() else {**load(evaluate.PARAMS), **{k: v for k, v in given.items() if v is not None}}
    flip_tta = tta["flip_tta"]
    model = _model_file.load(args.model)
    rows = []
    for path in args.images:                     # every file is checked before any output
        try:
            rows.append(read_image(path, model.input_shape))
        except ImageError as err:
            raise StageError(f"{quote(str(path), 200, bare=True)}: {err}") from None
    x = normalize(np.stack(rows), model.normalization)
    proba = model.probabilities(x, flip_tta, tta["translate_tta"])
    names = model.class_names
    results = []
    for path, p in zip(args.images, proba):
        order = np.argsort(-p, kind="stable")[:args.top]
        results.append({"image": str(path), "predictions": [
            {"class": names[i], "probability": round(float(p[i]), 6)} for i in order]})
    if args.json:
        json.dump({"classes": list(names), "flip_tta": flip_tta, "translate_tta": tta["translate_tta"],
                   "images": results}, sys.stdout, indent=2)
        print()
        return
    print(f"The model picks among the {len(names)} classes it was trained on ({', '.join(names)}); "
          "it cannot answer 'none of these'.")
    for r in results:
        shown = ", ".join(f"{q['class']} {q['probability']:.3f}" for q in r["predictions"])
        print(f"{r['image']}: {shown}")


if __name__ == "__main__":
    run_stage("predict", main)
