"""Screenshot of what `dvc plots show` draws for a repository's real run: docs/dvc-plots.png.

`dvc plots show`'s page loads Vega from a CDN, so a machine without network shows no curves there.
This script takes the same plots from `dvc plots show --json`, renders each Vega-Lite chart with
vl-convert (Vega bundled, no network: `pip install vl-convert-python`) and each image plot as it is,
lays them out on one page in DVC's order and has headless Chromium capture it.

    python docs/plots_screenshot.py [--repo .] [--out docs/dvc-plots.png] [--chromium chromium]
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rendered_plots(repo: Path) -> list[tuple[str, bytes]]:
    """(title, PNG) per plot and revision, as `dvc plots show` lists them."""
    try:
        import vl_convert
    except ImportError:
        raise SystemExit("needs vl-convert: pip install vl-convert-python") from None
    shown = subprocess.run(["dvc", "plots", "show", "--json"], cwd=repo, check=True,
                           capture_output=True, text=True)
    out = []
    for name, items in json.loads(shown.stdout)["data"].items():
        for item in items:
            if item["type"] == "vega":
                out.append((name, vl_convert.vegalite_to_png(json.dumps(item["content"]), scale=1.5)))
            elif item["type"] == "image":
                out.append((name, Path(item["url"]).read_bytes()))
    if not out:
        raise SystemExit(f"dvc plots show found no plot in {repo}: run the pipeline's report stage first")
    return out


def page(plots: list[tuple[str, bytes]]) -> str:
    figures = "".join(f"<h3>{html.escape(title)}</h3><img src='data:image/png;base64,"
                      f"{base64.b64encode(png).decode()}'>" for title, png in plots)
    style = "<style>body{font-family:sans-serif;background:white} img{max-width:100%}</style>"
    return f"<html><body>{style}{figures}</body></html>"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dvc-plots.png")
    parser.add_argument("--chromium", default="chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index.html"
        index.write_text(page(rendered_plots(args.repo.resolve())))
        subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        f"--user-data-dir={Path(tmp) / 'profile'}", "--window-size=1100,1600", "--hide-scrollbars",
                        f"--screenshot={args.out.resolve()}", index.as_uri()], check=True, capture_output=True,
                       timeout=180)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
