"""The clinician display in a real headless browser (Debian chromium + chromedriver, selenium):
the real diagnosis node on the shipped bundle ``models/demo`` and the display node, each in
its own process in one namespace and ROS domain; the test plays the camera with the demo's
real eye pairs (`demo/publish_samples.py`'s exam ids ``demo-<patient>``) and reads what the
page shows. Waits are conditions (up to 60 s: the machine may be busy), never fixed sleeps.
Screenshots go under the test's tmp_path."""

from __future__ import annotations

import csv
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from test.ros.harness import REPO, Client, NodeProcess, isolate_module_domain, require_ros, served_node

require_ros()
pytestmark = [pytest.mark.ros, pytest.mark.slow]

from dms_net_ros.display.browser import browser_missing, full_page_screenshot, headless_chrome, images_loaded_js  # noqa: E402

if browser_missing():
    pytest.skip(browser_missing(), allow_module_level=True)

from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from dms_net_core.data.preprocess import load_rgb  # noqa: E402
from dms_net_ros.image_codec import rgb_to_image_msg  # noqa: E402

WAIT = 60.0
with open(REPO / "demo" / "samples" / "labels.csv", newline="") as _f:
    DEMO_PATIENTS = [row["patient_id"] for row in csv.DictReader(_f)]  # demo/publish_samples.py's order
XSS_ID = "<script>alert(1)</script>"
URL_RE = re.compile(r"display at (http://\S+)")


def _wait(predicate, timeout: float = WAIT, what: str = "condition", poll: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)  # polling a condition, not a fixed wait
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_display(namespace: str, log: Path, *params: str) -> tuple[NodeProcess, str]:
    cmd = [sys.executable, "-m", "dms_net_ros.display.node", "--ros-args", "-r", f"__ns:={namespace}",
           "-p", "image_qos:=reliable"]
    for p in params:
        cmd += ["-p", p]
    proc = NodeProcess(cmd, log)

    def url() -> str | None:
        if proc.proc.poll() is not None:
            raise AssertionError(f"display exited with {proc.proc.returncode}:\n{proc.log_text()[-2000:]}")
        m = URL_RE.search(proc.log_text())
        return m.group(1) if m else None

    return proc, _wait(url, what="the display's URL line")


class Stack:
    """Diagnosis node + display + camera client + browser, shared by the module's tests."""

    def __init__(self, client: Client, node: NodeProcess, tmp: Path) -> None:
        self.client, self.node, self.tmp = client, node, tmp
        self.display: NodeProcess | None = None
        self.url = ""
        self.published: list[str] = []
        self.driver = None
        self._stamp = time.time_ns()

    def start_display(self, *params: str) -> None:
        self.display, self.url = start_display(self.client.namespace, self.tmp / f"display{len(self.published)}.log",
                                               *params)
        ns = self.client.namespace
        # both sides discovered: the display found the diagnosis node's publisher, and this
        # client sees the display's subscriptions on both eyes and on `diagnosis`
        matched = lambda: ("receiving results: " in self.display.log_text()  # noqa: E731
                           and all(p.get_subscription_count() >= 2 for p in self.client.pubs.values())
                           and self.client.node.count_subscribers(ns + "/diagnosis") >= 2)
        assert self.client.spin_until(matched, WAIT), self.display.log_text()[-2000:]
        self.client.spin_for(1.0)

    def exam(self, exam_id: str, left_rgb: np.ndarray, right_rgb: np.ndarray) -> object:
        """Set the exam id (latched topic; wait until the node says it applied it), publish the
        pair, wait for its result."""
        marker = f"exam_id set to {exam_id!r}"
        seen = self.node.log_text().count(marker)
        self.client.publish_exam_id(exam_id)
        if not self.client.spin_until(lambda: self.node.log_text().count(marker) > seen, WAIT):
            raise AssertionError(f"the node never applied exam id {exam_id!r}:\n{self.node.log_text()[-2000:]}")
        n = len(self.client.results)
        self._stamp += 1_000_000_000
        self.client.publish_pair(rgb_to_image_msg(left_rgb, "rgb8"), rgb_to_image_msg(right_rgb, "rgb8"), self._stamp)
        assert self.client.spin_until(lambda: len(self.client.results) > n, WAIT), self.node.log_text()[-2000:]
        self.published.append(exam_id)
        return self.client.results[-1]

    def page_history(self) -> list[str]:
        """The history's exam ids (read in one script: the list is redrawn at every update)."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#history li[data-index] .hid')].map(e => e.textContent)")

    def wait_history(self, ids: list[str]) -> None:
        WebDriverWait(self.driver, WAIT).until(lambda d: set(ids) <= set(self.page_history()))

    def show(self, exam_id: str) -> None:
        """Click the exam in the history; wait until it is the exam shown and its images loaded."""
        self.wait_history([exam_id])
        self.driver.execute_script(
            "for (const li of document.querySelectorAll('#history li[data-index]'))"
            "  if (li.querySelector('.hid').textContent === arguments[0])"
            " { li.querySelector('button').click(); break; }", exam_id)
        WebDriverWait(self.driver, WAIT).until(lambda d: d.find_element(By.ID, "exam-id").text == exam_id)
        WebDriverWait(self.driver, WAIT).until(lambda d: d.execute_script(images_loaded_js()))

    def text(self, element_id: str) -> str:
        return self.driver.find_element(By.ID, element_id).text


def _rgb(patient: str, eye: str) -> np.ndarray:
    return load_rgb(str(REPO / "demo" / "samples" / "images" / f"{patient}_{eye}.jpg"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("display")
    ns = isolate_module_domain("display", 41, range(1, 100))
    with served_node(REPO / "models" / "demo", ns, {"publish_attention": True}, tmp / "node.log") as (client, node):
        s = Stack(client, node, tmp)
        driver = None
        try:
            s.start_display("port:=0", "history:=20")
            driver = s.driver = headless_chrome()
            driver.get(s.url)
            WebDriverWait(driver, WAIT).until(
                lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live")
            yield s
        finally:
            if driver is not None:
                driver.quit()
            if s.display is not None:
                s.display.stop()


def test_demo_103_shows_refer_with_cataract_in_the_left_eye(stack, tmp_path):
    for patient in DEMO_PATIENTS:
        stack.exam(f"demo-{patient}", _rgb(patient, "left"), _rgb(patient, "right"))
    res = stack.client.results[-len(DEMO_PATIENTS) + DEMO_PATIENTS.index("103")]
    assert res.exam_id == "demo-103" and res.referable and "C" in res.positive_codes
    stack.show("demo-103")
    d = stack.driver
    assert stack.text("verdict-title") == "REFER"
    assert d.find_element(By.ID, "verdict").get_attribute("data-verdict") == "refer"
    findings = [li.text for li in d.find_elements(By.CSS_SELECTOR, "#verdict-items li")]
    assert "Cataract — OS (left eye)" in findings, findings
    row = d.find_element(By.CSS_SELECTOR, "#class-table tr[data-code='C']")
    assert "pos" in row.get_attribute("class") and "positive — OS (left eye)" in row.text
    assert len(d.find_elements(By.CSS_SELECTOR, "#class-table tbody tr")) == 8
    # chart order: OD (right eye) on the viewer's left, each eye with its own photograph
    right, left = d.find_element(By.ID, "eye-right"), d.find_element(By.ID, "eye-left")
    assert right.location["x"] < left.location["x"]
    assert (right.find_element(By.TAG_NAME, "h2").text == "OD (right eye)"
            and left.find_element(By.TAG_NAME, "h2").text == "OS (left eye)")
    for card, eye in ((right, "right"), (left, "left")):
        src = card.find_element(By.CSS_SELECTOR, "img.photo").get_attribute("src")
        assert src.endswith(f"/images/{eye}.jpg")
        assert "Quality 1.00 — gradable" in card.text or "gradable" in card.text
    assert (stack.text("exam-id") == "demo-103" and "odir" in stack.text("model-id")
            and stack.text("backend") == "onnxruntime")
    if res.attention_published:  # the shipped bundle has class activation maps: OS shows the map of C
        assert res.left_attention_code == "C"
        toggle = "document.querySelector('#eye-left .overlay-toggle')"
        WebDriverWait(d, WAIT).until(lambda d: "CAM of C" in d.execute_script(f"return {toggle}.textContent"))
        d.execute_script(f"{toggle}.click()")
        WebDriverWait(d, WAIT).until(lambda d: d.execute_script(
            "return document.querySelector('#eye-left img.photo').src").endswith("/images/left_attention.jpg"))
        WebDriverWait(d, WAIT).until(lambda d: d.execute_script(images_loaded_js()))
        assert "class activation map of C" in d.find_element(By.CSS_SELECTOR, "#eye-left figcaption").text
        full_page_screenshot(d, tmp_path / "demo-103-overlay.png")
        d.execute_script(f"{toggle}.click()")
    assert "Research prototype — not a medical device" in d.find_element(By.TAG_NAME, "header").text
    WebDriverWait(d, WAIT).until(lambda d: "running" in d.find_element(By.ID, "health").text)  # /diagnostics
    assert "rate (Hz)" in stack.text("health")
    full_page_screenshot(d, tmp_path / "demo-103.png")


def test_non_fundus_image_shows_retake_with_its_reason(stack, tmp_path):
    gray = np.full((256, 256, 3), 128, np.uint8)
    res = stack.exam("gray-left", gray, _rgb("951", "right"))
    assert res.status == 1 and res.quality_reasons
    stack.show("gray-left")
    assert stack.text("verdict-title") == "RETAKE"
    assert "OS (left eye)" in stack.text("verdict-detail") and "OD (right eye)" not in stack.text("verdict-detail")
    reasons = [li.text for li in stack.driver.find_elements(By.CSS_SELECTOR, "#verdict-items li")]
    assert reasons == list(res.quality_reasons) and reasons[0].startswith("left: ")
    assert "not gradable" in stack.driver.find_element(By.ID, "eye-left").text
    full_page_screenshot(stack.driver, tmp_path / "retake.png")


def test_script_exam_id_renders_as_text(stack, tmp_path):
    stack.exam(XSS_ID, _rgb("556", "left"), _rgb("556", "right"))
    stack.show(XSS_ID)
    d = stack.driver
    with pytest.raises(NoAlertPresentException):
        d.switch_to.alert.text  # noqa: B018 - no alert was opened
    assert stack.text("exam-id") == XSS_ID
    assert len(d.find_elements(By.TAG_NAME, "script")) == 1  # only display.js
    assert XSS_ID in stack.page_history()
    full_page_screenshot(d, tmp_path / "xss.png")


def test_error_result_shows_error_with_its_message(stack, tmp_path):
    """Only the left eye arrives: the node's ERROR result ("right eye never arrived") is shown
    as ERROR with its status message, with the photograph that did arrive."""
    marker = "exam_id set to 'left-only'"
    stack.client.publish_exam_id("left-only")
    assert stack.client.spin_until(lambda: marker in stack.node.log_text(), WAIT)
    n = len(stack.client.results)
    stack._stamp += 1_000_000_000
    stack.client.publish("left", rgb_to_image_msg(_rgb("583", "left"), "rgb8"), stack._stamp)
    assert stack.client.spin_until(lambda: len(stack.client.results) > n, WAIT)
    res = stack.client.results[-1]
    assert res.status == 2 and "right eye never arrived" in res.status_message
    stack.published.append("left-only")
    stack.show("left-only")
    assert stack.text("verdict-title") == "ERROR"
    assert stack.text("verdict-detail") == res.status_message
    assert stack.driver.execute_script(
        "return document.querySelector('#eye-left img.photo').src").endswith("/images/left.jpg")
    assert "no image received" in stack.driver.find_element(By.ID, "eye-right").text
    assert "Quality not assessed" in stack.driver.find_element(By.ID, "eye-right").text
    full_page_screenshot(stack.driver, tmp_path / "error.png")


def test_history_lists_every_exam_published(stack):
    assert len(stack.published) >= 10
    stack.wait_history(stack.published)
    assert sorted(stack.page_history()) == sorted(stack.published)


def test_page_recovers_after_the_display_restarts(stack, tmp_path):
    port = int(stack.url.rsplit(":", 1)[1].strip("/"))
    stack.display.proc.send_signal(signal.SIGKILL)  # killed, not stopped: no goodbye to the page
    stack.display.stop()
    d = stack.driver
    state = "return document.getElementById('connection').dataset.state"
    WebDriverWait(d, WAIT).until(lambda d: d.execute_script(state) == "down", "the page never noticed the display died")
    stack.start_display(f"port:={port}")
    WebDriverWait(d, WAIT).until(lambda d: d.execute_script(state) == "live", "the page never reconnected")
    WebDriverWait(d, WAIT).until(lambda d: stack.page_history() == [],
                                 "the restarted display's (empty) state never replaced the old")
    stack.exam("after-restart", _rgb("103", "left"), _rgb("103", "right"))
    # follows the latest
    WebDriverWait(d, WAIT).until(lambda d: d.find_element(By.ID, "exam-id").text == "after-restart",
                                 f"the new exam never showed; history {stack.page_history()}")
    WebDriverWait(d, WAIT).until(lambda d: d.execute_script(images_loaded_js()), "images never loaded")
    assert stack.page_history() == ["after-restart"]  # the new display's history, no stale exams
    assert stack.text("verdict-title") == "REFER"
    full_page_screenshot(d, tmp_path / "after-restart.png")


def test_non_loopback_bind_needs_the_token(stack, tmp_path):
    ns = stack.client.namespace
    refused = NodeProcess([sys.executable, "-m", "dms_net_ros.display.node", "--ros-args", "-r", f"__ns:={ns}",
                           "-r", "__node:=display_open", "-p", "host:=0.0.0.0", "-p", "port:=0"], tmp_path / "open.log")
    assert refused.exit_code(WAIT) == 2
    errors = [line for line in refused.log_text().splitlines() if "display not started" in line]
    assert len(errors) == 1 and "token" in errors[0], refused.log_text()
    proc, url = start_display(ns, tmp_path / "tokened.log", "host:=0.0.0.0", "port:=0", "token:=s3cret")
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "api/state", timeout=10)
        assert err.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        assert err.value.code == 401
        with urllib.request.urlopen(url + "api/state?token=s3cret", timeout=10) as r:
            assert r.status == 200
        assert "s3cret" not in proc.log_text()  # the token is never logged
        # the browser with the tokened URL: the page's cookie lets its stylesheet and script load, the WebSocket opens
        local = "http://127.0.0.1:" + url.rsplit(":", 1)[1]
        d = stack.driver
        d.get(local + "?token=s3cret")
        WebDriverWait(d, WAIT).until(lambda d: d.execute_script(
            "return document.getElementById('connection').dataset.state") == "live", "the tokened page never went live")
        assert d.execute_script("return document.styleSheets[0].cssRules.length") > 10
        d.get(local)  # the cookie alone still works for the page itself
        assert "DMS-Net fundus screening" in d.find_element(By.TAG_NAME, "h1").text
    finally:
        proc.stop()


def test_overlay_toggle_shows_the_attention_overlay(stack, tiny_bundle, tmp_path):
    """A bundle with maps (the tiny DMS-Net: OSIM attention, torch backend) and publish_attention:
    each eye's toggle swaps its photograph for the overlay published with that eye's stamp."""
    ns = stack.client.namespace + "_overlay"
    params = {"backend": "torch", "publish_attention": True}
    with served_node(tiny_bundle, ns, params, tmp_path / "node.log") as (client, node):
        s = Stack(client, node, tmp_path)
        s.driver = stack.driver
        s.start_display("port:=0")
        try:
            s.driver.get(s.url)
            res = s.exam("overlay-1", _rgb("103", "left"), _rgb("103", "right"))
            assert res.attention_published
            s.show("overlay-1")
            d = s.driver
            toggle_js = "return document.querySelector('#eye-left .overlay-toggle')"
            WebDriverWait(d, WAIT).until(lambda d: not d.execute_script(toggle_js + ".disabled"))  # the overlay arrived
            assert "Show overlay (attention)" in d.execute_script(toggle_js + ".textContent")
            d.execute_script(toggle_js + ".click()")
            WebDriverWait(d, WAIT).until(lambda d: d.execute_script(
                "return document.querySelector('#eye-left img.photo').src").endswith("/images/left_attention.jpg"))
            WebDriverWait(d, WAIT).until(lambda d: d.execute_script(images_loaded_js()))
            assert d.execute_script(
                "return document.querySelector('#eye-right img.photo').src").endswith("/images/right.jpg")
            assert "attention map" in d.find_element(By.CSS_SELECTOR, "#eye-left figcaption").text
            full_page_screenshot(d, tmp_path / "overlay.png")
            d.execute_script(toggle_js + ".click()")  # and back to the photograph
            WebDriverWait(d, WAIT).until(lambda d: d.execute_script(
                "return document.querySelector('#eye-left img.photo').src").endswith("/images/left.jpg"))
        finally:
            s.display.stop()
