"""Does ``distnet predict`` work on real files?  Two checks with a trained MNIST checkpoint.

1. MNIST test images saved as PNG files: ``distnet predict`` on the files must agree with
   ``distnet evaluate`` on the same images (written as an IDX test split), image by image.
2. Unseen inputs: the digits 0-9 rendered in black on white with every font found below
   (Debian: fonts-dejavu-core, fonts-liberation2, fonts-freefont-ttf), put through the same
   conversion as any image (inverted, fitted into 28x28 like MNIST): how many are right.

    python examples/predict_unseen.py CHECKPOINT [--images 1000] [--out DIR] [--figure fonts.png]

Needs Pillow (and matplotlib for --figure).  Prints a table; writes the files under --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FONTS = {  # label: file, Debian's paths
    "DejaVu Sans": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "DejaVu Sans Bold": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "DejaVu Serif": "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "DejaVu Sans Mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "Liberation Sans": "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "Liberation Serif": "/usr/share/fonts/truetype/liberation2/LiberationSerif-Regular.ttf",
    "Liberation Mono": "/usr/share/fonts/truetype/liberation2/LiberationMono-Regular.ttf",
    "FreeSans": "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "FreeSerif": "/usr/share/fonts/truetype/freefont/FreeSerif.ttf",
    "FreeMono": "/usr/share/fonts/truetype/freefont/FreeMono.ttf",
}


def run_cli(*args) -> dict | list:
    r = subprocess.run([sys.executable, "-m", *args, "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def mnist_pngs(checkpoint: str, count: int, out: Path) -> dict:
    """Save the first ``count`` test images as PNG and as an IDX split; predict the PNGs,
    evaluate the IDX split; both must give the same answers."""
    from PIL import Image

    from distnet.data import load_dataset, write_idx

    test = load_dataset("mnist", "test")
    images = np.asarray(test.images[:count, 0])
    labels = np.asarray(test.labels[:count])
    png_dir, idx_dir = out / "mnist-png", out / "mnist-idx"
    png_dir.mkdir(parents=True, exist_ok=True)
    idx_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (img, label) in enumerate(zip(images, labels)):
        path = png_dir / f"{i:05d}-label{label}.png"
        Image.fromarray(img).save(path)
        files.append(str(path))
    write_idx(idx_dir / "t10k-images-idx3-ubyte", images)
    write_idx(idx_dir / "t10k-labels-idx1-ubyte", labels.astype(np.uint8))
    predicted = run_cli("distnet.predict", checkpoint, *files)
    evaluated = run_cli("distnet.evaluate", checkpoint, "--dataset", "mnist", "--data-dir", str(idx_dir))
    right = sum(int(p["class"]) == int(label) for p, label in zip(predicted, labels))
    return {"images": count, "predict_correct": right, "predict_accuracy": right / count,
            "evaluate_accuracy": evaluated["accuracy"], "evaluate_samples": evaluated["samples"]}


def render(font_path: str, digit: int, size: int = 112):
    """Black digit on white, like a scan: the conversion has to invert and fit it."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, int(size * 0.7))
    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    draw.text(((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top), str(digit), fill=0, font=font)
    return im


def font_digits(checkpoint: str, out: Path) -> list[dict]:
    folder = out / "font-digits"
    folder.mkdir(parents=True, exist_ok=True)
    found = {name: path for name, path in FONTS.items() if Path(path).is_file()}
    if not found:  # no Debian fonts: matplotlib ships DejaVu Sans
        try:
            import matplotlib
            bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
            if bundled.is_file():
                found = {"DejaVu Sans (matplotlib's)": str(bundled)}
        except ImportError:
            pass
    if not found:
        sys.exit("no fonts found: apt-get install fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf")
    missing = sorted(set(FONTS) - set(found))
    if missing:
        print(f"fonts not installed (skipped): {', '.join(missing)}", file=sys.stderr)
    files = []
    for name, path in found.items():
        for digit in range(10):
            target = folder / f"{name.replace(' ', '_')}-{digit}.png"
            render(path, digit).save(target)
            files.append((name, digit, str(target)))
    predicted = run_cli("distnet.predict", checkpoint, *(f for _, _, f in files))
    return [{"font": name, "digit": digit, "file": f, "class": int(p["class"]), "probability": p["probability"],
             "conversion": p["conversion"]} for (name, digit, f), p in zip(files, predicted)]


def draw_figure(results: list[dict], meta_shape, path: str) -> None:
    """Each rendered digit as the model sees it (after conversion), with the prediction."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from distnet.cli.inputs import read_samples

    fonts = list(dict.fromkeys(r["font"] for r in results))
    fig, axes = plt.subplots(len(fonts), 10, figsize=(10, 1.15 * len(fonts) + 0.6), dpi=90)
    axes = np.atleast_2d(axes)
    for r in results:
        ax = axes[fonts.index(r["font"]), r["digit"]]
        pixels = read_samples(r["file"], meta_shape, dark_background=True)[0].pixels[0]
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=255)
        ok = r["class"] == r["digit"]
        ax.set_title(f"{r['class']} ({r['probability'] * 100:.0f}%)", fontsize=8, color="green" if ok else "red")
        ax.set_xticks([])
        ax.set_yticks([])
        if r["digit"] == 0:
            ax.set_ylabel(r["font"], fontsize=7, rotation=0, ha="right", va="center")
    right = sum(r["class"] == r["digit"] for r in results)
    fig.suptitle(f"distnet predict on digits rendered in {len(fonts)} fonts, as the model sees them: "
                 f"{right}/{len(results)} right (red: wrong)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    from PIL import Image
    with Image.open(path) as im:  # 16 grey levels and two colours are all it has: a small file
        small = im.convert("RGB").quantize(colors=32)
    small.save(path, optimize=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--images", type=int, default=1000, help="MNIST test images to export as PNG (default 1000)")
    p.add_argument("--out", help="folder for the generated files (default: a temporary one)")
    p.add_argument("--figure", help="draw the font digits as the model sees them (PNG)")
    args = p.parse_args()
    try:
        import PIL  # noqa: F401  (it writes and reads the PNG files)
    except ImportError:
        sys.exit("predict_unseen: needs Pillow: pip install Pillow (or pip install -e '.[tools]')")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="distnet-unseen-"))

    mnist = mnist_pngs(args.checkpoint, args.images, out)
    print(f"MNIST test images 0..{mnist['images'] - 1} as PNG files: predict {mnist['predict_correct']}/"
          f"{mnist['images']} = {mnist['predict_accuracy'] * 100:.2f}%; evaluate on the same images "
          f"{mnist['evaluate_accuracy'] * 100:.2f}% of {mnist['evaluate_samples']}")
    fonts = font_digits(args.checkpoint, out)
    print("\n| font | right | wrong (digit -> predicted) |\n|---|---|---|")
    for name in dict.fromkeys(r["font"] for r in fonts):
        rows = [r for r in fonts if r["font"] == name]
        wrong = [f"{r['digit']}->{r['class']}" for r in rows if r["class"] != r["digit"]]
        print(f"| {name} | {len(rows) - len(wrong)}/{len(rows)} | {', '.join(wrong) or '-'} |")
    right = sum(r["class"] == r["digit"] for r in fonts)
    print(f"| **all** | **{right}/{len(fonts)}** | |")
    if args.figure:
        from distnet.meta import load_trained
        _, meta = load_trained(args.checkpoint)
        draw_figure(fonts, meta["input_shape"], args.figure)
        print(f"\nfigure: {args.figure}")
    print(f"files: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
