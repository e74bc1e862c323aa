"""Cold load time of a report's pages with the Plotly build the report ships (the cartesian build)
against the same report with Plotly's full build (the plotly.min.js of the installed plotly package).

Both copies are made in a temporary folder from one report; they differ only in the bytes of
plotly-cartesian.min.js. Each load starts a fresh headless Chromium with an empty profile (nothing
cached), opens a page from disk and polls until every chart of the page has drawn; the time is the
page's own clock (performance.now(), from the start of navigation) at that moment. The variants
alternate, load after load, so that the machine's noise falls on both.

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

from interp.report.html import PLOTLY

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# every chart of the page drawn (and the page's rows or title there: the charts come last)
READY = (
    "(() => { const plots = Array.from(document.querySelectorAll('.plot'));"
    " return plots.length > 0 && plots.every(p => p._fullLayout) ? performance.now() : 0; })()"
)


def first_firing_feature(report: Path) -> int:
    chunk = (report / "data" / "features-0000.js").read_text()
    features = json.loads(chunk[chunk.index(", ") + 2 : chunk.rindex(")")])
    return next(f["id"] for f in features if f["fire_count"])


def cold_load_ms(url: str, profile: Path, timeout_s: float = 60.0) -> float:
    """Milliseconds from navigation start until every chart of the page at `url` has drawn, in a fresh
    Chromium with an empty profile."""
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
            ready = driver.execute_script("return " + READY)
            if ready:
                return float(ready)
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
        copies = {"cartesian": Path(tmp) / "cartesian", "full": Path(tmp) / "full"}
        for folder in copies.values():
            shutil.copytree(args.report, folder)
        shutil.copyfile(full_build, copies["full"] / PLOTLY)
        pages = {"index": "index.html", "feature": f"feature.html#{first_firing_feature(args.report)}"}
        sizes = {name: (folder / PLOTLY).stat().st_size for name, folder in copies.items()}
        print(
            f"report {args.report}; Plotly: cartesian {sizes['cartesian'] / 1e6:.2f} MB, "
            f"full {sizes['full'] / 1e6:.2f} MB (plotly {plotly.__version__}); {args.repeats} cold loads each"
        )
        times: dict[tuple[str, str], list[float]] = {(p, b): [] for p in pages for b in copies}
        for _ in range(args.repeats):
            for page, target in pages.items():
                for build, folder in copies.items():
                    name, _, fragment = target.partition("#")
                    url = (folder / name).as_uri() + (f"#{fragment}" if fragment else "")
                    times[page, build].append(cold_load_ms(url, Path(tmp) / "profile"))
        for page in pages:
            full, cartesian = (statistics.median(times[page, b]) for b in ("full", "cartesian"))
            print(
                f"{page:8} charts drawn after: full build {full:7.0f} ms, cartesian {cartesian:7.0f} ms "
                f"(medians); full / cartesian = {full / cartesian:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
