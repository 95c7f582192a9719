"""The reading page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) against the real `bench reader-study serve` process."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.reader_study import fill_workbook, shared_runs
from readerstudy.export import ExportRequest, export
from readerstudy.items import read_items
from readerstudy.layout import StudyDir
from readerstudy.report import import_study

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_encoder):
    return shared_runs(tmp_path_factory, tiny_encoder)


def make_study(runs, out: Path) -> StudyDir:
    # two readers, each study read once: reader1 gets two studies, reader2 the other two
    export(ExportRequest(runs=[runs["nn"], runs["constant"]], out=out, n=4, readers=2, reads_per_study=1, seed=5,
                         cache_dir=runs["nn"].parent.parent / "cache"))
    return StudyDir(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    study = make_study(runs, tmp_path_factory.mktemp("web") / "s")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from bench.cli import main; main()", "reader-study", "serve",
                             str(study.root), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            urllib.request.urlopen(base + "/", timeout=1)
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode())
            time.sleep(0.2)
    token = json.loads(study.readers.read_text())["readers"]["reader1"]["token"]
    yield base, token, study
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_saved(driver, row: str, timeout: float = 5) -> None:
    end = time.time() + timeout
    while time.time() < end:
        status = driver.find_element("css selector", f'li[data-row="{row}"] .status').text
        if status and status != "saving…":
            return
        time.sleep(0.05)
    raise AssertionError(f"row {row} not saved")


# the verdicts typed on the page, and typed into the workbook for the comparison
def verdict(run: str, k: int) -> dict:
    if run == "nn":
        return {"action": "keep"} if k == 1 else {"action": "delete", "categories": ["omission"], "impact": "significant"}
    return {"action": "edit", "categories": ["misclassification"], "impact": "minor", "edit": "Better."}


KEYS = {"keep": "k", "delete": "d", "edit": "e"}
CAT_KEYS = {"omission": "1", "misclassification": "2"}
IMPACT_KEYS = {"significant": "s", "minor": "m", "none": "n"}


def type_verdict(driver, row: str, v: dict) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    actions = ActionChains(driver)
    actions.send_keys(KEYS[v["action"]]).perform()
    wait_saved(driver, row)
    if v["action"] == "edit":  # the edit box has focus, prefilled with the sentence
        box = driver.switch_to.active_element
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(v["edit"], Keys.ENTER)
        wait_saved(driver, row)
    for c in v.get("categories", []):
        ActionChains(driver).send_keys(CAT_KEYS[c]).perform()
        wait_saved(driver, row)
    if v.get("impact"):
        ActionChains(driver).send_keys(IMPACT_KEYS[v["impact"]]).perform()
        wait_saved(driver, row)


def test_read_with_the_keyboard_reload_finish_and_import(server, browser, runs, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    base, token, study = server
    key = json.loads(study.key.read_text())["studies"]
    items = [i for i in read_items(study.items) if not i.empty and i.reader == "reader1"]
    browser.get(f"{base}/r/{token}")
    assert "0 of" in browser.find_element("id", "progress").text
    browser.get(f"{base}/r/{token}/case/1")
    # the image arrives and is drawn (zoom and window/level act on it)
    for _ in range(100):
        if browser.find_element("id", "canvas").get_attribute("data-loaded") == "1":
            break
        time.sleep(0.05)
    assert browser.find_element("id", "canvas").get_attribute("data-loaded") == "1"
    ActionChains(browser).send_keys("+").perform()
    case1 = [i for i in items if i.case == 1]
    # three sentences by keyboard, then reload: the answers are still there
    for n, it in enumerate(case1[:3]):
        if n:
            ActionChains(browser).send_keys("j").perform()
        type_verdict(browser, it.row, verdict(key[it.sample_id]["reports"][it.letter], it.sentence))
    browser.refresh()
    for it in case1[:3]:
        v = verdict(key[it.sample_id]["reports"][it.letter], it.sentence)
        li = browser.find_element("css selector", f'li[data-row="{it.row}"]')
        assert li.find_element("css selector", f'[data-action="{v["action"]}"]').get_attribute("class") == "on"
        for c in v.get("categories", []):
            assert li.find_element("css selector", f'[data-category="{c}"]').get_attribute("class") == "on"
        assert "done" in li.get_attribute("class")
        if v["action"] == "edit":
            assert li.find_element("css selector", "input.edit").get_attribute("value") == v["edit"]
    # finishing early is refused with what is open
    browser.find_element("id", "finish").click()
    time.sleep(0.5)
    assert "not complete yet" in browser.find_element("id", "message").text
    # the rest, case by case
    for case in sorted({i.case for i in items}):
        rows = [i for i in items if i.case == case]
        browser.get(f"{base}/r/{token}/case/{case}")
        for n, it in enumerate(rows):
            if n:
                ActionChains(browser).send_keys("j").perform()
            if case == 1 and n < 3:
                continue
            type_verdict(browser, it.row, verdict(key[it.sample_id]["reports"][it.letter], it.sentence))
    browser.find_element("id", "finish").click()
    for _ in range(50):
        if "Finished" in browser.find_element("id", "message").text:
            break
        time.sleep(0.1)
    assert "Finished" in browser.find_element("id", "message").text
    # reader2 has not read yet: --partial analyses reader1's complete readings and says so
    web = import_study(study.root, partial=True, n_bootstrap=100, n_permutations=100)
    assert web["sources"] == {"reader1": "reading page"} and any("reader2" in x for x in web["left_out"])
    # the same verdicts through a workbook give the same numbers
    other = make_study(runs, tmp_path / "s")
    assert other.items.read_bytes() == study.items.read_bytes()
    fill_workbook(other.workbooks / "reader1.xlsx", other.returned / "reader1.xlsx",
                  {it.row: verdict(key[it.sample_id]["reports"][it.letter], it.sentence) for it in items})
    wb = import_study(other.root, partial=True, n_bootstrap=100, n_permutations=100)
    assert web["systems"] == wb["systems"] and web["paired"] == wb["paired"]
    assert web["systems"]["nn"]["impact"]["counts"]["significant"] == sum(
        1 for i in items if key[i.sample_id]["reports"][i.letter] == "nn" and i.sentence > 1)


def test_unknown_link_and_paths_outside_the_study(server):
    base, token, study = server
    status, body = get(f"{base}/r/not-a-reader")
    assert status == 404 and b"This reading link does not exist" in body
    status, _ = get(f"{base}/r/not-a-reader/image/study-001.png")
    assert status == 404
    mine = {i.image for i in read_items(study.items) if i.reader == "reader1"}
    theirs = {i.image for i in read_items(study.items) if i.reader == "reader2"} - mine
    assert mine and theirs
    assert all(get(f"{base}/r/{token}/image/{name}")[0] == 200 for name in mine)
    # a reader sees only their own link's studies: another reader's image is not there
    assert all(get(f"{base}/r/{token}/image/{name}")[0] == 404 for name in theirs)
    status, body = get(f"{base}/r/{token}")
    assert status == 200 and body.count(b"/case/") - body.count(b"Start") == 2
    for path in ("image/..%2Fkey%2Funblinding-key.json", "image/%2E%2E%2Fmanifest.json", "image/..%2F..%2Fetc%2Fpasswd",
                 "../key/unblinding-key.json", "image/unblinding-key.json"):
        status, body = get(f"{base}/r/{token}/{path}")
        assert status == 404 and b"reports" not in body, path
    for path in ("/key/unblinding-key.json", "/static/..%2Fkey%2Funblinding-key.json", "/manifest.json",
                 "/static/../../key/unblinding-key.json"):
        status, body = get(base + path)
        assert status == 404 and b'"reports"' not in body, path
    # an answer outside the vocabulary is refused, not stored
    req = urllib.request.Request(f"{base}/r/{token}/answer", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"row": "01-A-1", "action": "maybe"}).encode())
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("accepted an unknown action")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and "unknown value 'maybe'" in e.read().decode()
