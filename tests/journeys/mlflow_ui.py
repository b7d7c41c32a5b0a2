"""What a reviewer does in the MLflow 3 UI, as Playwright steps on the page's own controls.

Checked against MLflow 3.17: Home -> "Model training" -> "Model registry" (a first-visit
dialog offers the new registry UI: "Try it now") -> the model -> the version row holding
`@challenger` -> the version page: description (the model card) above a Tags table whose
rows have a pencil (edit in place, then Save) and, under it, Name/Value boxes with Add.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.journeys.browser import VIEWPORT

MAX_SCREENSHOT_PX = 6000


def open_challenger(page: Page, mlflow_url: str, model: str) -> str:
    """From MLflow's home page to the `@challenger` version's page; returns the version."""
    new_ui_offer = page.get_by_role("dialog").filter(has_text="Model Registry UI")
    page.add_locator_handler(
        new_ui_offer, lambda dialog: dialog.get_by_role("button", name="Try it now").click())
    page.goto(mlflow_url)
    page.get_by_role("button", name="Model training").click()
    page.get_by_role("link", name="Model registry").click()
    page.get_by_role("link", name=model, exact=True).click()
    row = page.get_by_role("row").filter(has_text="challenger")
    link = row.get_by_role("link", name=re.compile(r"^Version \d+$"))
    version = link.inner_text().removeprefix("Version ").strip()
    link.click()
    expect(page.get_by_role("heading", name=f"Version {version}")).to_be_visible()
    return version


def close_assistant(page: Page) -> None:
    """The MLflow Assistant side panel covers a third of the page in screenshots."""
    panel_close = page.get_by_role("button", name="Close")
    if panel_close.count() == 1 and panel_close.is_visible():
        panel_close.click()


def screenshot_whole_page(page: Page, path: Path) -> None:
    """The page is a fixed frame whose content scrolls inside: grow the window to fit it."""
    height = page.evaluate(
        "Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))")
    page.set_viewport_size({**VIEWPORT, "height": min(int(height) + 40, MAX_SCREENSHOT_PX)})
    page.screenshot(path=path)
    page.set_viewport_size(VIEWPORT)


def tag_row(page: Page, key: str):
    return page.get_by_test_id("tags-section").locator(f'tr[data-row-key="{key}"]')


def edit_tag(page: Page, key: str, value: str, screenshot: Path | None = None) -> None:
    """The pencil on the tag's row, the new value, (a screenshot of the table), Save."""
    row = tag_row(page, key)
    row.get_by_test_id("editable-table-button-edit").click()
    row.get_by_test_id("editable-table-edited-input").fill(value)
    if screenshot is not None:
        page.get_by_test_id("tags-section").screenshot(path=screenshot)
    row.get_by_role("button", name="Save").click()
    expect(row.locator("td").nth(1)).to_have_text(value)


def add_tag(page: Page, key: str, value: str) -> None:
    """The Name and Value boxes under the tags table, then Add."""
    tags = page.get_by_test_id("tags-section")
    tags.get_by_placeholder("Name").fill(key)
    tags.get_by_placeholder("Value").fill(value)
    tags.get_by_role("button", name="Add", exact=True).click()
    expect(tag_row(page, key).locator("td").nth(1)).to_have_text(value)
