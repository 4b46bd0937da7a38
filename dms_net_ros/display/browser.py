"""Headless Chromium for the display's screenshots and browser tests (demo and tests only).

Uses Debian's ``chromium`` and ``chromium-driver`` (``scripts/setup.sh`` installs them when run
as root) through selenium with the driver path given explicitly, and ``SE_OFFLINE=1``, so
Selenium Manager never tries to download a browser. Selenium is imported lazily: the display
node itself never needs it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing() -> str:
    """Why no headless browser can start here ("" when one can)."""
    if chromium_binary() is None or not Path(CHROMEDRIVER).is_file():
        return ("chromium or chromedriver not installed: run `bash scripts/setup.sh` as root "
                "(apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed: run `bash scripts/setup.sh` (requirements/test.txt)"
    return ""


def headless_chrome(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium WebDriver (call ``quit()``); raises RuntimeError naming what is missing."""
    missing = browser_missing()
    if missing:
        raise RuntimeError(missing)
    os.environ.setdefault("SE_OFFLINE", "1")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def full_page_screenshot(driver: Any, path: Path | str, width: int = 1400) -> Path:
    """The whole page (window stretched to the document's height) as a PNG at ``path``."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    height = int(driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the viewport itself, not the window around it
                           {"width": width, "height": max(600, min(height, 4000)), "deviceScaleFactor": 1,
                            "mobile": False})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


def images_loaded_js() -> str:
    """JS predicate: every visible image on the page has finished loading and decoded."""
    return "return [...document.images].every(i => i.hidden || (i.complete && i.naturalWidth > 0))"
