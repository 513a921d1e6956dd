"""The blind evaluation pictures for docs/screenshots (run by tests/screenshots.py).

A deployment of its own (one embedded app per process at a time, so after the story's
has closed): two scripted members that answer a three-turn Dune conversation in their
own words, each replayed alone as a run over two copies of it; a person judges two
turns, then the third is photographed at 1280 and 390 px wide, and /runs with the
judgements' table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipeline.committee import Committee, Member

DUNE = [
    {"question": "Who wrote Dune?", "gold": ["Frank Herbert"]},
    {"question": "When was it first published?", "gold": ["1965"]},
    {"question": "What is the sequel called?", "gold": ["Dune Messiah"]},
]
REPLIES = {
    "terse": ["Frank Herbert.", "1965.", "Dune Messiah."],
    "chatty": [
        "Dune was written by Frank Herbert.",
        "It first appeared as a serial in Analog, then as a book in 1965.",
        "The sequel is Children of Dune.",
    ],
}


def pair_committee() -> Committee:
    members = tuple(
        Member(name=name, backend="scripted", model=name, options={"replies": replies})
        for name, replies in REPLIES.items()
    )
    return Committee(name="pair", members=members)


def make_pair(client: Any) -> tuple[str, str]:
    """Runs ``terse`` and ``chatty`` (each member alone) over two copies of the conversation.

    One conversation at a time: a scripted member's replies go in turn, so the story stays in step.
    """
    for member in REPLIES:
        for copy in (1, 2):
            conversation = {"id": f"dune-{copy}", "source": "example", "turns": DUNE}
            client.submit(conversation, run=member, method=f"single:{member}").wait(timeout=60)
    return ("chatty", "terse")


def evaluate_screenshots(out: Path) -> list[Path]:
    from selenium.webdriver.common.by import By

    from pipeline.service.settings import Settings
    from tests.screenshots import chrome, free_port, save_page, serve_in_thread
    from workers.embedded import connect
    from workers.serve import ServerOptions, create_api

    settings = Settings(home=Path(tempfile.mkdtemp(prefix="peerblend-screenshots-evaluate-")))
    saved = []
    with connect(settings, pair_committee()) as client:
        first, second = make_pair(client)
        port = free_port()
        server = serve_in_thread(create_api(client, ServerOptions()), port)
        driver = chrome()
        try:
            base = f"http://127.0.0.1:{port}"
            driver.get(f"{base}/evaluate")
            driver.find_element(By.CSS_SELECTOR, 'input[name="name"]').send_keys("Ada")
            for field, run in (("first", first), ("second", second)):
                driver.find_element(By.CSS_SELECTOR, f'select[name="{field}"] option[value="{run}"]').click()
            driver.find_element(By.CSS_SELECTOR, "#start button").click()
            for pick in ("A", "tie"):  # two judged, so the progress reads "2 of 6 judged"
                driver.find_element(By.CSS_SELECTOR, f'input[name="choice"][value="{pick}"]').find_element(
                    By.XPATH, ".."
                ).click()
                driver.find_element(By.CSS_SELECTOR, "#judge button").click()
            for _ in range(30):  # each load draws anew: show a later turn, with the conversation so far
                if driver.find_element(By.CSS_SELECTOR, "#item").get_attribute("data-turn") != "1":
                    break
                driver.refresh()
            saved.append(save_page(driver, out / "evaluate.png"))
            saved.append(_phone_page(driver, out / "evaluate-phone.png"))
            driver.get(f"{base}/runs")
            saved.append(save_page(driver, out / "runs.png"))
        finally:
            driver.quit()
            server.should_exit = True
    return saved


def _phone_page(driver: Any, path: Path, width: int = 390) -> Path:
    """The page as a phone ``width`` CSS pixels wide shows it (Chrome's device emulation)."""
    metrics = {"width": width, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {**metrics, "height": min(max(height, 600), 3000)}
    )
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path
