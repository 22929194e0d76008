"""The dashboard (GET /ui) in a real browser against a live stack: Debian's Chromium, driven by
Playwright (which never downloads a browser of its own here: it is handed /usr/bin/chromium)."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bulkjobs.api.app import UI_DIR
from bulkjobs.domain.jobs import ALLOWED
from tests.support import Client, Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
VIEWPORT = {"width": 1280, "height": 900}
# Set to a path (docs/dashboard.png) to save the screenshot the README shows.
DOCS_SCREENSHOT = os.environ.get("DASHBOARD_SCREENSHOT")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does it); "
                    "the dashboard's tests need a real browser")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, reduced_motion="reduce")
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page threw: {errors}"


def sign_in(page: Page, stack: Stack, key: str = "key-a") -> None:
    page.goto(stack.base + "/ui")
    page.fill("input[name=api-key]", key)
    page.click("form.key-form button[type=submit]")
    expect(page.locator("#nav")).to_be_visible()


def test_a_csv_submitted_in_the_dashboard_finishes_and_its_failed_rows_can_be_filtered_and_downloaded(
        page: Page, stack: Stack, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:4]  # the tenant's external ids outlive the test: new ones each run
    upload = tmp_path / "machines.csv"
    upload.write_text(f"external_id,name,rpm\nP-{run}-1,press,900\nP-{run}-2,mill,1200\nP-{run}-3,lathe,450\n"
                      f"P-{run}-1,drill,300\n")  # the last row reuses the first one's id: it fails

    sign_in(page, stack)
    form = page.locator("#submit-form")
    form.locator("input[name=file]").set_input_files(upload)
    form.locator("select[name=operation]").select_option("insert")
    form.locator("input[name=object_type]").fill("machine")
    form.locator("input[name=description]").fill("Machines from the plant floor")
    form.locator("button[type=submit]").click()
    accepted = form.locator(".notice.ok a")
    expect(accepted).to_be_visible()
    job_id = (accepted.get_attribute("href") or "").removeprefix("#/jobs/")

    row = page.locator(f"#job-list tbody tr[data-job-id='{job_id}']")
    expect(row.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100", timeout=30_000)
    expect(row.locator(".badge")).to_have_text("Partially succeeded", timeout=30_000)
    expect(row).to_contain_text("4 / 4")
    expect(row).to_contain_text("1 failed")

    row.locator("a").first.click()
    expect(page.locator(".page-head h1")).to_have_text("Machines from the plant floor")
    expect(page.locator(".count-created .value")).to_have_text("3")
    expect(page.locator(".count-failed .value")).to_have_text("1")
    expect(page.locator("[data-command=delete]")).to_be_visible()  # an ended job can only be deleted
    expect(page.locator("[data-command=cancel]")).to_have_count(0)
    expect(page.locator("#results tbody tr")).to_have_count(4)

    page.locator("select[name=outcome]").select_option("failed")
    failed = page.locator("#results tbody tr")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text(f"External id 'P-{run}-1' is already in use")
    expect(failed.locator("td").first).to_have_text("3")

    with page.expect_download() as downloaded:
        page.click("[data-download='results.csv']")
    lines = Path(downloaded.value.path()).read_text().splitlines()
    assert lines[0] == "_status,_id,_error,external_id,name,rpm"
    assert [line.split(",")[0] for line in lines[1:]] == ["added", "added", "added", "failed"]
    assert lines[4].endswith(f",P-{run}-1,drill,300") and "already in use" in lines[4]

    page.mouse.move(0, 0)  # no button left in its hover look
    page.locator("[data-download='results.csv']").blur()
    page.screenshot(path=tmp_path / "job-page.png", full_page=True)
    if DOCS_SCREENSHOT:
        bottom = page.evaluate("document.querySelector('main').getBoundingClientRect().bottom")
        page.screenshot(path=DOCS_SCREENSHOT, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": bottom})


def test_a_running_job_is_cancelled_from_its_page(page: Page, stack: Stack, api: Client, tmp_path: Path) -> None:
    sign_in(page, stack)
    kind = f"dash-big-{uuid.uuid4().hex[:8]}"
    records = "".join(json.dumps({"type": kind, "external_id": str(i), "attributes": {"i": i}}) + "\n"
                      for i in range(100_000))
    resp = api.post(f"/v1/jobs?type=resources&action=external_id_set&description={kind}", data=records.encode(),
                    content_type="application/x-ndjson")
    assert resp.status == 202, resp.body
    job_id = resp.body["id"]

    page.evaluate("id => { window.location.hash = `#/jobs/${id}`; }", job_id)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-command=cancel]")

    expect(page.locator(".page-head .badge")).to_have_text("Cancelled")
    expect(page.locator("[data-command=delete]")).to_be_visible()
    page.screenshot(path=tmp_path / "cancelled-job-page.png", full_page=True)
    job = api.job(job_id)
    assert job["status"] == "cancelled" and job["counts"]["processed"] < 100_000


def test_the_dashboard_offers_the_commands_the_api_allows() -> None:
    """job.js keeps its own copy of domain.jobs.ALLOWED (less "update", which it does not offer)."""
    found = re.search(r"export const ALLOWED = (\{.*?\});", (UI_DIR / "job.js").read_text(), re.S)
    assert found, "job.js has no ALLOWED table"
    offered = json.loads(re.sub(r",\s*}", "}", found.group(1)))
    assert {status: set(commands) for status, commands in offered.items()} == \
        {status: set(commands) - {"update"} for status, commands in ALLOWED.items()}
