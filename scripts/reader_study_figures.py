"""Regenerate docs/figures/reader-study-*.png and the numbers in docs/reader-study.md: a reader
study of nn, constant and SAE-Rad on the embedded default, read by two simulated readers, and a
screenshot of the reading page (headless Chromium; skipped without chromium and chromedriver).

    python scripts/reader_study_figures.py [--runs DIR] [--work DIR]

--runs: a directory with scored nn, constant and saerad runs (default: made with `bench run`
under --work). Prints the import's tables (summary.md) for the docs page.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIGURES = REPO / "docs" / "figures"


def bench(*args: str) -> None:
    subprocess.run([sys.executable, "-c", "from bench.cli import main; main()", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="reader-study-"))
    runs = args.runs or work / "runs"
    if args.runs is None:
        bench("run", "--system", "nn,constant,saerad", "--out", str(runs))
    study = work / "study"
    shutil.rmtree(study, ignore_errors=True)
    bench("reader-study", "export", "--runs", str(runs), "--n", "30", "--readers", "2", "--seed", "0",
          "--out", str(study))
    bench("reader-study", "simulate", str(study), "--seed", "0")
    bench("reader-study", "import", str(study))
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name in ("category-impact.png", "actions.png"):
        shutil.copy(study / "results" / name, FIGURES / f"reader-study-{name}")
    page = work / "page"  # a fresh export for the screenshot: the page shows reader1's first case
    shutil.rmtree(page, ignore_errors=True)
    bench("reader-study", "export", "--runs", str(runs), "--n", "30", "--readers", "2", "--seed", "0",
          "--out", str(page))
    screenshot(page, FIGURES / "reader-study-page.png")
    print(f"figures written to {FIGURES}; the tables are in {study / 'results' / 'summary.md'}")


def screenshot(study: Path, dest: Path) -> None:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        print("no chromium/chromedriver: the page screenshot is not regenerated")
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", "from bench.cli import main; main()", "reader-study", "serve",
                               str(study), "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        token = json.loads((study / "readers.json").read_text())["readers"]["reader1"]["token"]
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,860"):
            opts.add_argument(arg)
        browser = webdriver.Chrome(service=Service(driver), options=opts)
        try:
            browser.get(f"{base}/r/{token}/case/1")
            time.sleep(1.0)
            for keys in ("k", "j", "d1s", "j"):  # keep the first sentence, delete the second (omission, significant)
                for key in keys:
                    ActionChains(browser).send_keys(key).perform()
                    time.sleep(0.3)
            browser.save_screenshot(str(dest))
        finally:
            browser.quit()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
