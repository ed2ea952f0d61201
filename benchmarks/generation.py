"""CAPTCHAs per second: stock captcha (PNG, one process), our renderer per style, and our seeded generation stage.

Run from the repository root: ``.venv/bin/python benchmarks/generation.py --count 2000``.
``--style`` picks the stage's style (default seed000, as params.yaml); the per-style lines render every
style in this process, without the stage's labels, hashes and files, so their ratio is the drawing's alone.
Methods take turns for ``--repeat`` rounds and each keeps its best round, so load from other
processes on a shared machine skews them alike and least; CPU time (this process and its workers)
is reported beside wall time because it barely depends on that load. Results go to stdout; the
stage's own lines and progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.common` when run as a script

import common  # noqa: E402  (benchmarks/common.py)
from captcha.image import ImageCaptcha  # noqa: E402

from transferbench.data import captcha  # noqa: E402
from transferbench.data import generation as generate_captcha  # noqa: E402

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def machine() -> str:
    return common.machine(f"captcha {version('captcha')}", f"Pillow {version('pillow')}", f"numpy {version('numpy')}")


def stock(texts: list[str], png: bool) -> common.Timing:
    """The stock generator makes every text in this process (fonts loaded beforehand)."""
    gen = ImageCaptcha(width=160, height=80)
    gen.generate_image("WARMUP")
    make = gen.generate if png else gen.generate_image
    return common.timed(lambda: [make(text) for text in texts])


def rendered(texts: list[str], style: captcha.Style) -> common.Timing:
    """Our render() for every text in this process (fonts and per-size grids made beforehand)."""
    captcha.render("WARMUP", "warm-up", 160, 80, style=style)
    return common.timed(lambda: [captcha.render(text, captcha.image_key(0, "bench", i), 160, 80, style=style)
                                 for i, text in enumerate(texts)])


def ours(count: int, workers: int, style: str) -> common.Timing:
    """The whole stage function: labels, rendering, hashes, manifests, final move (pool start-up too)."""
    held_out = max(1, count // 20)
    values = {"train": count - 2 * held_out, "validation": held_out, "test": held_out, "width": 160,
              "height": 80, "length": 6, "alphabet": ALPHABET, "workers": workers, "style": style}
    with tempfile.TemporaryDirectory(prefix="bench-captcha-") as tmp, contextlib.redirect_stdout(sys.stderr):
        out, work = Path(tmp) / "out", Path(tmp) / "work"
        return common.timed(lambda: generate_captcha.generate(out, work, values, 0, workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="CAPTCHAs per method (default 2000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (default 1 2)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each method keeps its best (default 3)")
    parser.add_argument("--style", choices=captcha.STYLES, default="seed000",
                        help="the stage's CAPTCHA style (default seed000)")
    args = parser.parse_args()
    if args.count < 3:
        parser.error(f"--count must be at least 3 (one image per split), got {args.count}")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")

    texts = captcha.draw_labels(0, {"all": args.count}, ALPHABET, 6)["all"]
    methods = {"stock generate(), PNG, 1 process": lambda: stock(texts, png=True),
               "stock generate_image(), no PNG, 1 process": lambda: stock(texts, png=False)}
    methods.update({f"our render(), style={style}, 1 process": (lambda style=style: rendered(texts, style))
                    for style in captcha.STYLES})
    methods.update({f"our stage, {args.style}, workers={w}": (lambda w=w: ours(args.count, w, args.style))
                    for w in args.workers})
    load_before = os.getloadavg()[0]
    rounds, best = common.best_of_rounds(methods, args.repeat)

    print(machine())
    print(f"{args.count} CAPTCHAs of 6 characters, 160x80, per method; best of {args.repeat} interleaved rounds; "
          f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    baseline = args.count / best[next(iter(methods))][0]
    print(f"{'method':44} {'best s':>7} {'CAPTCHAs/s':>11} {'vs stock PNG':>13} {'CPU ms/CAPTCHA':>15}"
          f"  wall s of every round")
    for name, (seconds, cpu) in best.items():
        rate = args.count / seconds
        print(f"{name:44} {seconds:7.2f} {rate:11.0f} {rate / baseline:12.2f}x {1000 * cpu / args.count:15.2f}"
              f"  {common.spread(rounds, name)}")


if __name__ == "__main__":
    main()
