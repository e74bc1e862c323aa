"""Cold load time of a report's pages as shipped (Plotly's cartesian build, loaded once the page's
text has been painted) against the same report with Plotly loaded first, as a blocking script in
<head>: the full build (the plotly.min.js of the installed plotly package) and the cartesian one.

The three copies are made in a temporary folder from one report; they differ only in the bytes of
plotly-cartesian.min.js and in how the pages load it. Each load starts a fresh headless Chromium with
an empty profile (nothing cached), opens a page from disk and polls until every chart has drawn. Two
times, on the page's own clock from the start of navigation: its first contentful paint (the text
shown) and the moment every chart had drawn. The variants alternate, load after load, so that the
machine's noise falls on all of them.

    .venv/bin/python scripts/bench_report_load.py [--report reports/demo] [--repeats 5]

Needs Chromium and ChromeDriver (scripts/install_browser.sh) and selenium (the test extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import plotly
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from interp.app.report.html import PLOTLY

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHARTS_DRAWN = "(p => p.length > 0 && p.every(d => d._fullLayout))(Array.from(document.querySelectorAll('.plot')))"
FIRST_PAINT = "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime"
DEFERRED = f'<body data-plotly="{PLOTLY}">'
BLOCKING = f'<script src="{PLOTLY}"></script>\n<script src="report.js"></script>\n'


def first_firing_feature(report: Path) -> int:
    chunk = (report / "data" / "features-0000.js").read_text()
    features = json.loads(chunk[chunk.index(", ") + 2 : chunk.rindex(")")])
    return next(f["id"] for f in features if f["fire_count"])


def load_blocking(folder: Path) -> None:
    """Rewrite the pages in `folder` to load Plotly first, as a blocking script in <head>."""
    for page in folder.glob("*.html"):
        text = page.read_text()
        if DEFERRED in text:
            text = text.replace(DEFERRED, "<body>").replace('<script src="report.js"></script>\n', BLOCKING)
            page.write_text(text)


def cold_load_ms(url: str, profile: Path, timeout_s: float = 60.0) -> tuple[float, float]:
    """(first contentful paint, every chart drawn) in ms from navigation start, for the page at `url` in a
    fresh Chromium with an empty profile."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        end = time.time() + timeout_s
        while time.time() < end:
            now, painted, charts = driver.execute_script(f"return [performance.now(), {FIRST_PAINT}, {CHARTS_DRAWN}]")
            if painted and charts:
                return painted, now
            time.sleep(0.01)
        raise TimeoutError(f"{url}: the charts did not draw within {timeout_s:.0f} s")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, default=Path("reports/demo"), help="a report folder (`make demo`)")
    parser.add_argument("--repeats", type=int, default=5, help="cold loads per page and build (default 5)")
    args = parser.parse_args()
    if not (args.report / "index.html").is_file():
        sys.exit(f"{args.report}: no report there; build one with `make demo` or pass --report DIR")
    if args.repeats <= 0:
        sys.exit(f"--repeats must be positive, got {args.repeats}")
    full_build = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    with tempfile.TemporaryDirectory() as tmp:
        copies = {
            "full build, blocking": Path(tmp) / "full",
            "cartesian, blocking": Path(tmp) / "cartesian",
            "cartesian, after paint (shipped)": Path(tmp) / "shipped",
        }
        for folder in copies.values():
            shutil.copytree(args.report, folder)
        shutil.copyfile(full_build, copies["full build, blocking"] / PLOTLY)
        load_blocking(copies["full build, blocking"])
        load_blocking(copies["cartesian, blocking"])
        pages = {"index": "index.html", "feature": f"feature.html#{first_firing_feature(args.report)}"}
        megabytes = {
            name: path.stat().st_size / 1e6
            for name, path in (("cartesian", args.report / PLOTLY), ("full", full_build))
        }
        print(
            f"report {args.report}; Plotly: cartesian {megabytes['cartesian']:.2f} MB, full {megabytes['full']:.2f} MB "
            f"(plotly {plotly.__version__}); {args.repeats} cold loads each"
        )
        times: dict[tuple[str, str], list[tuple[float, float]]] = {(p, v): [] for p in pages for v in copies}
        for _ in range(args.repeats):
            for page, target in pages.items():
                for variant, folder in copies.items():
                    name, _, fragment = target.partition("#")
                    url = (folder / name).as_uri() + (f"#{fragment}" if fragment else "")
                    times[page, variant].append(cold_load_ms(url, Path(tmp) / "profile"))
        baseline = "full build, blocking"
        for page in pages:
            base_text, base_charts = (statistics.median(t[i] for t in times[page, baseline]) for i in (0, 1))
            for variant in copies:
                text, charts = (statistics.median(t[i] for t in times[page, variant]) for i in (0, 1))
                print(
                    f"{page:8} {variant:32} text painted {text:6.0f} ms ({base_text / text:4.2f}x)   "
                    f"charts {charts:6.0f} ms ({base_charts / charts:4.2f}x)   medians; x: {baseline} / this"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
