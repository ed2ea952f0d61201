"""The two CAPTCHA styles side by side, the same image keys in each: docs/captcha-styles.png.

Labels are drawn as the stage draws them from seed 0, each style with its own symbol odds (so the two
columns differ), and the sheet is the same bytes on every run with the same Pillow, NumPy and captcha.

    python docs/captcha_styles.py [--out docs/captcha-styles.png] [--rows 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from captcha.image import DEFAULT_FONTS
from PIL import Image, ImageDraw, ImageFont

from transferbench.data import captcha

ROOT = Path(__file__).resolve().parent.parent
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # params.yaml's, as in the reference study
WIDTH, HEIGHT, SCALE, GAP, HEADER, CAPTION = 160, 80, 2, 12, 28, 22


def sheet(rows: int, seed: int = 0) -> Image.Image:
    """One column per style, ``rows`` CAPTCHAs each at ``SCALE`` times their size, every label under its image."""
    cell_w, cell_h = WIDTH * SCALE, HEIGHT * SCALE + CAPTION
    page = Image.new("RGB", (len(captcha.STYLES) * (cell_w + GAP) + GAP, HEADER + rows * (cell_h + GAP)), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(DEFAULT_FONTS[0], 16, layout_engine=ImageFont.Layout.BASIC)
    for column, style in enumerate(captcha.STYLES):
        x = GAP + column * (cell_w + GAP)
        draw.text((x, 6), f"style: {style}", font=font, fill="black")
        labels = captcha.draw_labels(seed, {"docs": rows}, ALPHABET, 6, captcha.symbol_weights(ALPHABET, style))
        for row, label in enumerate(labels["docs"]):
            image = captcha.render(label, captcha.image_key(seed, "docs", row), WIDTH, HEIGHT, style=style)
            y = HEADER + row * (cell_h + GAP)
            page.paste(Image.fromarray(image).resize((cell_w, HEIGHT * SCALE), Image.Resampling.NEAREST), (x, y))
            draw.text((x, y + HEIGHT * SCALE + 3), label, font=font, fill="black")
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "captcha-styles.png")
    parser.add_argument("--rows", type=int, default=5, help="CAPTCHAs per style (default 5)")
    args = parser.parse_args()
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")
    page = sheet(args.rows)
    page.save(args.out, format="PNG", optimize=True)
    print(f"wrote {args.out} ({page.width}x{page.height})")


if __name__ == "__main__":
    main()
