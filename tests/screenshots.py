"""Refresh the web page screenshots in docs/screenshots/ (and share the browser helpers with tests).

One process: the embedded deployment (in-process worker, SQLite in a temporary
folder) with a scripted committee of four that tells a short story (one member
slow, one whose server is down), the pages served by uvicorn on a thread, and
Debian's headless ``chromium`` driven through ``chromium-driver`` (tests/browser.sh
installs both; nothing is downloaded here).

    tests/browser.sh && .venv/bin/python tests/screenshots.py [--out docs/screenshots]

Pictures: the list (with the chat box), a submitted conversation, the runs page, a turn
deliberating (candidates in, ballots coming), a chat of two questions asked in the page,
and the conversation and the list on a phone (390 px).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PEERBLEND_TEST_BACKENDS", "1")

import uvicorn  # noqa: E402

from pipeline.committee import Committee, Member  # noqa: E402

CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"
PHONE_WIDTH = 390  # CSS pixels: a common phone
STORY = {
    "id": "dune-1",
    "source": "example",
    "turns": [
        {"question": "Who wrote Dune?", "gold": ["Frank Herbert"]},
        {"question": "When was it first published?", "gold": ["1965"]},
    ],
}


def story_committee(*, delay_s: float = 0.0, name: str = "story") -> Committee:
    """Four scripted members: m0 and m2 review by likelihood, m1 by ranking, m3's server is down.

    m2 sleeps ``delay_s`` per call (answer and review), so each turn takes at least twice that.
    """
    scores = {"Frank Herbert": -0.4, "1965": -0.5, "Herbert": -0.9}
    options: dict[str, dict[str, Any]] = {
        "m0": {"replies": ["Frank Herbert.", "1965."], "scores": scores},
        "m1": {"replies": ["Dune was written by Frank Herbert.", "It was first published in 1965."]},
        "m2": {"replies": ["Herbert, I think.", "Around 1966."], "scores": scores, "delay_s": delay_s},
        "m3": {"fail": "connection refused: http://10.0.0.7:8000/v1 (scripted outage)"},
    }
    members = tuple(
        Member(
            name=f"m{i}",
            backend="scripted",
            model=f"model{i}",
            review_method="ranking" if i % 2 else "likelihood",
            options=options[f"m{i}"],
        )
        for i in range(4)
    )
    return Committee(name=name, members=members)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_in_thread(api: object, port: int) -> uvicorn.Server:
    """uvicorn serving ``api`` on 127.0.0.1:``port`` on a daemon thread; returns once it listens."""
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True, name="peerblend-web").start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"uvicorn did not start on port {port} within 30 s")
    return server


def browser_problem() -> str | None:
    """Why the headless browser cannot run here (None when it can)."""
    missing = [name for name in (CHROMIUM, CHROMEDRIVER) if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed: run tests/browser.sh (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: .venv/bin/pip install selenium"
    return None


def chrome() -> Any:
    """Headless Debian chromium through chromium-driver (never Selenium Manager: no downloads)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(CHROMIUM) or CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    return webdriver.Chrome(service=Service(executable_path=shutil.which(CHROMEDRIVER)), options=options)


def save_page(driver: Any, path: Path, *, width: int = 1280, most: int = 4000) -> Path:
    """A screenshot of the whole page (up to ``most`` pixels tall) at ``path``."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(max(height, 600), most))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(width, 900)
    return path


def phone(driver: Any, *, width: int = PHONE_WIDTH, height: int = 844) -> None:
    """Show pages as a phone ``width`` CSS pixels wide would (Chrome's device emulation: a
    desktop window cannot be made that narrow); ``desktop`` undoes it."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def desktop(driver: Any) -> None:
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def overflow(driver: Any) -> tuple[int, int]:
    """(the document's width, the window's): a page a reader must scroll sideways has the first larger."""
    widths = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
    return int(widths[0]), int(widths[1])


def save_phone_page(driver: Any, path: Path, *, width: int = PHONE_WIDTH, most: int = 3000) -> Path:
    """A screenshot of the page as a phone ``width`` wide shows it, whole (up to ``most`` tall)."""
    phone(driver, width=width)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    phone(driver, width=width, height=min(max(height, 600), most))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    phone(driver, width=width)
    return path


def deliberating(driver: Any) -> bool:
    """Whether the page's last turn shows every candidate and a ballot, but no decision yet."""
    script = """
        const turns = document.querySelectorAll("section.turn");
        const last = turns[turns.length - 1];
        return !!last && last.querySelectorAll(".live-candidates article").length >= 4
            && last.querySelectorAll(".live-ballots li").length >= 1 && !last.querySelector(".answer-text");
    """
    return bool(driver.execute_script(script))


def ask_in_browser(driver: Any, question: str, *, box: str = "#ask textarea") -> None:
    """Type ``question`` in the page's question box and send it."""
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.CSS_SELECTOR, box)
    field.clear()
    field.send_keys(question)
    field.find_element(By.XPATH, "./ancestor::form").find_element(
        By.CSS_SELECTOR, "button[type=submit]"
    ).click()


def wait_for(driver: Any, condition: Any, seconds: float = 60) -> Any:
    """``condition(driver)`` once true, polled until ``seconds`` pass (then selenium's TimeoutException)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver, seconds, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )
    return wait.until(condition)


def answered(number: int) -> Any:
    """A wait condition: turn ``number`` (from 1) shows its answer."""
    from selenium.webdriver.common.by import By

    return lambda d: d.find_elements(By.CSS_SELECTOR, f"#turn-{number} .answer-text")


def chat_screenshots(driver: Any, base: str, out: Path) -> None:
    """Ask the story's two questions in the browser: the turn deliberating, the chat, the phone."""
    driver.get(base + "/")
    ask_in_browser(driver, STORY["turns"][0]["question"], box="#chat textarea[name=question]")
    wait_for(driver, deliberating)
    print(save_page(driver, out / "deliberating.png"))
    wait_for(driver, answered(1))
    ask_in_browser(driver, STORY["turns"][1]["question"])
    wait_for(driver, answered(2))
    print(save_page(driver, out / "chat.png"))
    print(save_phone_page(driver, out / "phone.png"))
    driver.get(base + "/conversations")
    print(save_phone_page(driver, out / "phone-list.png"))
    desktop(driver)


def main() -> None:
    from pipeline.service.settings import Settings
    from workers.embedded import connect
    from workers.serve import ServerOptions, create_api

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    if (problem := browser_problem()) is not None:
        raise SystemExit(f"screenshots: {problem}")
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="peerblend-screenshots-")))
    # m2 slow enough (1 s a call) that a turn is seen deliberating: candidates, then ballots
    with connect(settings, story_committee(delay_s=1.0)) as client:
        # the scripted replies follow the story while every member answers every turn: the full
        # conversation, then the chat, then p2 (whose even turns leave members out)
        story = client.submit(STORY, run="demo")
        story.wait(timeout=60)
        port = free_port()
        server = serve_in_thread(create_api(client, ServerOptions()), port)
        driver = chrome()
        try:
            base = f"http://127.0.0.1:{port}"
            chat_screenshots(driver, base, args.out)
            client.submit(STORY, policy="p2", run="demo").wait(timeout=60)
            pages = {
                "conversations": "/conversations",
                "conversation": f"/conversations/{story.conversation_id}",
                "runs": "/runs",
            }
            for name, path in pages.items():
                driver.get(base + path)
                print(save_page(driver, args.out / f"{name}.png"))
        finally:
            driver.quit()
            server.should_exit = True
    from tests.screenshots_evaluate import evaluate_screenshots  # a deployment of its own: after this one

    for path in evaluate_screenshots(args.out):
        print(path)


if __name__ == "__main__":
    main()
