"""A tiny app that classifies 8x8 handwritten digits with a bundle built by `edgekd build`.

Its only model dependency is edgekd.runtime + ONNX Runtime (or OpenVINO): no torch at run time.

    edgekd build examples/digits_app                  # -> examples/digits_app/build/digits
    python examples/digits_app/app.py digit.png 7.npy  # classify image files (PNG needs Pillow)
    python examples/digits_app/app.py --demo           # classify the bundle's own test images
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edgekd import runtime

HERE = Path(__file__).resolve().parent


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One grayscale image as float32 in [0, 1], resized to ``size`` (h, w)."""
    if path.suffix == ".npy":
        img = np.load(path, allow_pickle=False).astype(np.float32)
        img = img / img.max() if img.max() > 1 else img
    else:
        from PIL import Image  # only for image files; .npy needs nothing

        with Image.open(path) as im:
            img = np.asarray(im.convert("L").resize((size[1], size[0])), dtype=np.float32) / 255.0
    if img.shape != size:
        raise SystemExit(f"{path}: image is {img.shape}, the model wants {size}")
    return img


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, help=".png/.jpg (Pillow) or .npy 8x8 grayscale images")
    parser.add_argument("--bundle", type=Path, default=HERE / "build" / "digits", help="bundle folder")
    parser.add_argument("--target", default="cpu", help="target in the bundle: cpu or openvino-cpu [cpu]")
    parser.add_argument("--demo", action="store_true", help="classify the bundle's eval.npz and print accuracy")
    args = parser.parse_args(argv)

    model = runtime.load(args.bundle, target=args.target)  # verifies checksums and the I/O spec
    _, channels, h, w = model.inputs[0].shape
    print(f"loaded {model.manifest['name']} for {model.target_name} ({model.describe().get('runtime')}); "
          f"input {channels}x{h}x{w}, preprocessing {model.preprocessing.get('layout')} x{model.preprocessing.get('scale')}")
    if args.demo:
        data = runtime.load_npz(args.bundle / model.manifest["eval"]["file"])
        pred = model.predict(data["x"]).argmax(1)
        print(f"accuracy on {len(pred)} bundled test images: {(pred == data['y']).mean() * 100:.2f}%")
        print("first ten:", " ".join(model.classify(data["x"][:10])))
    if args.images:
        batch = np.stack([read_image(p, (h, w)) for p in args.images])[:, None]
        for path, label in zip(args.images, model.classify(batch)):
            print(f"{path}: {label}")
    if not (args.demo or args.images):
        parser.print_usage()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
