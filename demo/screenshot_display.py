"""One headless-browser screenshot of the clinician display per exam it remembers.

``scripts/demo.sh`` runs it after the exams: it opens the display's page in headless Chromium
(Debian ``chromium`` + ``chromium-driver``), clicks each exam of the history in turn, waits
until the page shows it with its images loaded and saves the whole page as
``<out-dir>/<index>_<exam id>.png``. Without chromium it prints one note and exits 0 (the
demo goes on without screenshots).

    python demo/screenshot_display.py --url http://127.0.0.1:8080/ --out-dir /tmp/shots
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from pathlib import Path

from dms_net_ros.display.browser import browser_missing, full_page_screenshot, headless_chrome, images_loaded_js

CLICK_EXAM = ("for (const li of document.querySelectorAll('#history li[data-index]'))"
              "  if (li.dataset.index === String(arguments[0])) { li.querySelector('button').click(); return true; }"
              "return false;")


SHOW_LEFT_OVERLAY = ("const b = document.querySelector('#eye-left .overlay-toggle');"
                     "if (b.disabled) return false; b.click(); return true;")
LEFT_IMAGE_SRC = "return document.querySelector('#eye-left img.photo').src"


def shrink_png(src: Path, dst: Path, width: int = 1000) -> Path:
    """``src`` scaled to ``width`` pixels wide, written as a maximally compressed PNG (README size)."""
    import cv2

    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    if w > width:
        img = cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the display's URL (as it logged it)")
    parser.add_argument("--out-dir", required=True, help="folder for the PNGs (created)")
    parser.add_argument("--exam", default="", help="only the exam with this id")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each exam to show")
    parser.add_argument("--width", type=int, default=1400, help="browser window width in pixels")
    parser.add_argument("--docs-png", default="",
                        help="also write the --docs-exam screenshot here, scaled for the README "
                             "(with the left eye's overlay shown when there is one)")
    parser.add_argument("--docs-exam", default="demo-103", help="the exam whose screenshot --docs-png gets")
    args = parser.parse_args(argv)
    missing = browser_missing()
    if missing:
        print(f"[demo] no display screenshots: {missing}")
        return 0
    from selenium.webdriver.support.ui import WebDriverWait

    with urllib.request.urlopen(args.url.rstrip("/") + "/api/state", timeout=args.timeout) as r:
        exams = json.load(r)["exams"]
    if args.exam:
        exams = [e for e in exams if e["exam_id"] == args.exam]
    out = Path(args.out_dir)
    driver = headless_chrome(width=args.width)
    try:
        driver.get(args.url)
        wait = WebDriverWait(driver, args.timeout)
        for exam in exams:
            wait.until(lambda d: d.execute_script(CLICK_EXAM, exam["index"]))
            wait.until(lambda d: d.find_element("id", "exam-id").text == (exam["exam_id"] or "(no exam id)"))
            wait.until(lambda d: d.execute_script(images_loaded_js()))
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", exam["exam_id"] or "no-id")[:64]
            path = full_page_screenshot(driver, out / f"{exam['index']:03d}_{name}.png", width=args.width)
            print(f"[demo] display screenshot: {path}")
            if args.docs_png and exam["exam_id"] == args.docs_exam:
                if driver.execute_script(SHOW_LEFT_OVERLAY):  # the README shows the OS finding's map
                    wait.until(lambda d: d.execute_script(LEFT_IMAGE_SRC).endswith("/left_attention.jpg"))
                    wait.until(lambda d: d.execute_script(images_loaded_js()))
                    path = full_page_screenshot(driver, out / f"{exam['index']:03d}_{name}_overlay.png",
                                                width=args.width)
                print(f"[demo] README screenshot: {shrink_png(path, Path(args.docs_png))}")
                driver.execute_script(SHOW_LEFT_OVERLAY)  # back to the photograph for the next exams
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
