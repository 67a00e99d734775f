"""The HTML replay report in headless Chromium (Debian's package, driven by Playwright; nothing downloads a browser):
it renders without errors, its counts match the JSON report, its filters work, and it loads nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.replays import Recorded, replay

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("chromium")]  # one browser at a time (pytest-xdist)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_report_renders_offline_with_the_json_counts(recorded: Recorded) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)")
    (recorded.folder / "templates" / "menu.j2").write_text("You are a <b>terse</b> bot of {{ company }}.")
    stages = recorded.stages.read_text().replace("keywords: [agent, human]", "keywords: [human]")
    recorded.stages.write_text(stages)
    page_file = recorded.folder / "replay.html"
    code, report, text = replay(recorded, "--no-cache", "--report", str(page_file))
    assert code == 0, text
    summary = report["summary"]
    assert summary["changed"] > 0
    requests: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_file.as_uri())
            page.screenshot(path=str(recorded.folder / "replay.png"))
            for name in ("turns", "unchanged", "changed", "errored", "transitions-changed"):
                key = name.replace("-", "_")
                assert page.inner_text(f"#count-{name}") == str(summary[key]), name
            listed = summary["changed"] + summary["errored"]
            assert page.locator(".turn").count() == listed
            assert page.inner_text("#shown") == str(listed)
            page.select_option("#outcome", "errored")
            assert page.inner_text("#shown") == str(summary["errored"])
            page.select_option("#outcome", "")
            page.select_option("#stage", "menu")
            assert int(page.inner_text("#shown")) == sum(
                1 for t in report["turns"] if t["outcome"] != "unchanged" and t["stage_before"] == "menu"
            )
            assert page.locator("ins").count() > 0  # the diff is highlighted
            assert page.locator(".turn b:text('terse')").count() == 0  # conversation text is escaped, not markup
        finally:
            browser.close()
    assert errors == []
    assert requests == [page_file.as_uri()]  # the page itself, nothing else
