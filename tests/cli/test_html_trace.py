"""The HTML trace (``agentbus trace RUN --html FILE``) in a real headless Chromium.

Runs are real: the examples and a synthetic ~2,000-event workflow (``trace_load_app.py``),
each through ``agentbus run`` on the embedded store, rendered through the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbus.html import _page_data as page_data
from agentbus.html import render_page
from agentbus.inspect import build_trace
from agentbus.journal import Journal

ROOT = Path(__file__).resolve().parents[2]
LOAD_APP = Path(__file__).with_name("trace_load_app.py")
PATTERN_EXAMPLES = ["research_team", "engineering_org", "incident_war_room", "task_auction"]


def agentbus(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentbus", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AGENTBUS_URL": ""},
    )


def run_and_render(app: Path, cwd: Path) -> tuple[str, Path, dict[str, Any]]:
    """Run ``app``; its run id, its HTML page and its trace as JSON."""
    done = agentbus("run", str(app), cwd=cwd)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split("run id: ")[1].split()[0]
    page = cwd / f"{run_id}.html"
    wrote = agentbus("trace", run_id, "--html", str(page), cwd=cwd)
    assert wrote.returncode == 0, wrote.stderr
    trace = json.loads(agentbus("trace", run_id, "--json", cwd=cwd).stdout)
    return run_id, page, trace


def flatten(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out, stack = [], list(reversed(nodes))
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node["children"]))
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are required under CI (see .ci/packages.txt)")
        pytest.skip("chromium/chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('profile')}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    """The browser as a trace page; fails the test on any JavaScript error it logged."""
    browser.get_log("browser")  # drop what earlier tests left
    yield Page(browser)
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    cwd = tmp_path_factory.mktemp("big")
    _, html_page, trace = run_and_render(LOAD_APP, cwd)
    return html_page, trace


class Page:
    """Helpers to drive the page the way a reader would."""

    def __init__(self, driver: Any) -> None:
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By

    def open(self, path: Path) -> None:
        self.driver.get(path.as_uri())
        self.wait(lambda: self.total_rows() > 0)

    def wait(self, condition: Any, timeout: float = 10) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout).until(lambda _: condition())

    def find(self, css: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def rows(self, css: str = ".row") -> list[Any]:
        """The tree rows in the DOM (those in view, plus a margin), top to bottom."""
        found = self.driver.find_elements(self.by.CSS_SELECTOR, f"#tree-inner {css}")
        return sorted(found, key=lambda r: int(r.value_of_css_property("top").rstrip("px")))

    def total_rows(self) -> int:
        return int(self.find("#tree-inner").get_attribute("data-rows") or 0)

    def count(self) -> str:
        return str(self.find("#count").text)

    def all_row_texts(self) -> list[str]:
        """Every row's visible text, scrolling the windowed tree from top to bottom."""
        texts: dict[int, str] = {}
        box = self.find("#tree")
        height = self.driver.execute_script("return arguments[0].scrollHeight", box)
        top = 0
        while True:
            self.driver.execute_script("arguments[0].scrollTop = arguments[1]", box, top)
            # Render and read in one script: the page re-renders on scroll events, and a
            # row element read across two WebDriver calls can be gone (stale) by then.
            found = self.driver.execute_script(
                "renderTree();"
                "return [...document.querySelectorAll('#tree-inner .row')]"
                ".filter(r => r.offsetParent !== null)"
                ".map(r => [parseInt(getComputedStyle(r).top), r.innerText]);"
            )
            for row_top, text in found:
                texts[int(row_top)] = str(text).strip()
            if top >= height:
                break
            top += 400
        return [texts[k] for k in sorted(texts)]

    def search(self, text: str) -> None:
        before = self.count()
        box = self.find("#q")
        box.clear()
        box.send_keys(text)
        # Typing is debounced: wait until the page filtered on the whole text.
        wanted = text.strip().lower()
        self.wait(lambda: self.driver.execute_script("return F.q") == wanted)
        self.wait(lambda: self.count() != before)

    def choose(self, select_id: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find(f"#{select_id}")).select_by_value(value)
        key = select_id.removeprefix("f-")
        self.wait(lambda: self.driver.execute_script(f"return F.{key}") == value)

    def height(self) -> int:
        return int(self.driver.execute_script("return document.documentElement.scrollHeight"))


def test_a_2000_event_run_keeps_a_bounded_page(big_run: tuple[Path, dict], page: Page) -> None:
    path, trace = big_run
    assert trace["events"] >= 1900
    assert "https://" not in path.read_text()
    page.open(path)
    assert page.height() < 5000
    # Roots open, deeper subtrees collapsed: more rows than roots, far fewer than records.
    rows = page.total_rows()
    assert len(trace["tree"]) < rows < trace["events"] + len(trace["steps"])
    assert len(page.rows()) < 100  # only the rows in view are in the DOM
    assert page.count() == f"{trace['events']} events, {len(trace['steps'])} steps"
    collapsed = page.rows(".row[data-open=false]")
    assert collapsed
    # The timeline still shows every publish.
    circles = page.driver.find_elements(page.by.CSS_SELECTOR, "#timeline circle")
    assert len(circles) == trace["events"]


def test_search_narrows_the_rows_to_the_matches(big_run: tuple[Path, dict], page: Page) -> None:
    path, trace = big_run
    events = flatten(trace["tree"])
    dead = [e for e in events if any("cannot read part" in (d["error"] or "") for d in e["deliveries"])]  # fmt: skip
    assert dead
    page.open(path)
    page.search("Cannot Read Part")  # case-insensitive, and it finds delivery errors
    assert page.count() == f"{len(dead)} of {trace['events']} events match"
    hits = page.rows(".row.event:not(.ctx)")
    assert hits
    assert all("checker: dead_lettered" in r.text for r in hits)
    # A step's reason is searchable too; the step shows under its (matching) event.
    page.search("lowest quote for J100")
    assert page.count() == f"1 of {trace['events']} events match"
    texts = [r.text for r in page.rows()]
    assert any("award" in t and "reason: lowest quote for J100" in t for t in texts)
    assert page.total_rows() == 2  # the job and its award step
    page.search("reviewer-b")
    n = int(page.count().split()[0])
    assert 0 < n < trace["events"]


def test_agent_type_and_status_filters(big_run: tuple[Path, dict], page: Page) -> None:
    path, trace = big_run
    events = flatten(trace["tree"])
    total = trace["events"]
    page.open(path)

    page.choose("f-agent", "reviewer-b")
    by_b = [
        e
        for e in events
        if e["source"] == "reviewer-b" or any(d["agent"] == "reviewer-b" for d in e["deliveries"])
    ]
    assert page.count() == f"{len(by_b)} of {total} events match"
    page.choose("f-agent", "")

    page.choose("f-type", "load.Review")
    reviews = [e for e in events if e["type"] == "load.Review"]
    assert page.count() == f"{len(reviews)} of {total} events match"
    assert all("load.Review" in r.text for r in page.rows(".row.event:not(.ctx)"))
    page.choose("f-type", "step:award")
    awards = [s for s in trace["steps"] if s["step"] == "award"]
    assert page.count() == f"{len(awards)} of {total} events match"
    steps = page.rows(".row.step")
    assert steps
    assert all(" award " in r.text and "reason: lowest quote" in r.text for r in steps)
    page.choose("f-type", "")

    page.choose("f-status", "dead_lettered")
    dead = [e for e in events if any(d["outcome"] == "dead_lettered" for d in e["deliveries"])]
    assert dead
    assert page.count() == f"{len(dead)} of {total} events match"
    assert all("dead_lettered" in r.text for r in page.rows(".row.event:not(.ctx)"))
    # Filters combine: the dead-lettered events are all the checker's.
    page.choose("f-agent", "drafter")
    assert page.count() == f"0 of {total} events match"
    assert page.total_rows() == 0


def test_steps_can_be_hidden(big_run: tuple[Path, dict], page: Page) -> None:
    path, _ = big_run
    page.open(path)
    assert page.rows(".row.step")
    before = page.total_rows()
    page.find("#f-steps").click()
    page.wait(lambda: page.total_rows() < before)
    assert page.rows(".row.step") == []


def test_expanding_a_collapsed_subtree_reveals_its_children(
    big_run: tuple[Path, dict], page: Page
) -> None:
    path, trace = big_run
    by_index = {e["index"]: e for e in flatten(trace["tree"])}
    page.open(path)
    row = page.rows(".row.event[data-open=false]")[0]
    index = int(row.text.split("#")[1].split()[0])
    children = by_index[index]["children"]
    assert children
    before = page.total_rows()
    row.find_element(page.by.CSS_SELECTOR, ".tog").click()
    page.wait(lambda: page.total_rows() == before + len(children))
    texts = [r.text for r in page.rows()]
    at = next(i for i, t in enumerate(texts) if f"#{index} " in t)
    assert "▾" in texts[at]
    assert f"#{children[0]['index']} {children[0]['type']}" in texts[at + 1]
    # Collapse all leaves the roots (and their run-level steps); expand all shows everything.
    page.find("#collapse-all").click()
    page.wait(lambda: page.total_rows() == len(trace["tree"]))
    page.find("#expand-all").click()
    page.wait(lambda: page.total_rows() == trace["events"] + len(trace["steps"]))
    assert page.height() < 5000


def test_clicking_a_step_shows_it_in_full(big_run: tuple[Path, dict], page: Page) -> None:
    path, _ = big_run
    page.open(path)
    page.search("lowest quote for J100")
    step = page.rows(".row.step")[0]
    step.click()
    fields = json.loads(page.find("#step-json").text)
    assert fields == {"job_id": "J100", "winner": "reviewer-a", "reason": "lowest quote for J100"}
    panel = page.find("#detail-body").text
    assert "while handling" in panel
    assert "load.Job" in panel


def _expected_fragments(step: dict[str, Any]) -> list[str]:
    """What a reader must see of a step: its name and its reasons, titles, goals, choices."""
    keys = ("reason", "title", "goal", "winner", "source", "child")
    out = [str(step["step"])]
    for key, value in step.items():
        if key in keys and isinstance(value, str):
            out.append(value)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    out += [str(v) for k, v in item.items() if k in keys and isinstance(v, str)]
    return out


@pytest.mark.parametrize("example", PATTERN_EXAMPLES)
def test_each_patterns_coordination_steps_are_shown(
    example: str, tmp_path: Path, page: Page
) -> None:
    _, path, trace = run_and_render(ROOT / "examples" / f"{example}.py", tmp_path)
    steps = trace["steps"]
    assert steps
    page.open(path)
    texts = page.all_row_texts()
    step_rows = [t for t in texts if t.startswith("✎")]
    assert len(step_rows) == len(steps)
    for step in steps:
        fragments = _expected_fragments(step)
        assert any(all(f in row for f in fragments) for row in step_rows), (step, fragments)
    # The decisions that make each pattern legible, by name.
    names = {s["step"] for s in steps}
    wanted = {
        "research_team": {"ow.planned", "ow.dispatched"},
        "engineering_org": {"hier.routed", "hier.delegated", "ow.planned", "ow.dispatched"},
        "incident_war_room": {"chose", "board-closed"},
        "task_auction": {"bids-collected", "awarded", "no-bids"},
    }[example]
    assert wanted <= names
    if example == "task_auction":
        award = next(s for s in steps if s["step"] == "awarded")
        assert any(f"to {award['winner']} for" in r and award["reason"] in r for r in step_rows)


def test_flags_on_records_show_as_badges_and_filter(tmp_path: Path, page: Page) -> None:
    done = agentbus("run", str(ROOT / "examples" / "support_desk.py"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split("run id: ")[1].split()[0]

    async def load() -> dict[str, Any]:
        async with Journal.open(
            f"memory://?journal={tmp_path / '.agentbus' / 'journal.sqlite3'}"
        ) as journal:
            info = await journal.run(run_id)
            records = await journal.records(info.run_id)
        return page_data(build_trace(info, records), records)

    data = asyncio.run(load())
    data["events"][3]["flags"] = ["unverified"]
    path = tmp_path / "flagged.html"
    path.write_text(render_page(data), encoding="utf-8")
    page.open(path)
    page.choose("f-status", "flagged")
    assert page.count() == f"1 of {len(data['events'])} events match"
    hit = page.rows(".row.event:not(.ctx)")
    assert len(hit) == 1
    assert "unverified" in hit[0].text
    assert hit[0].find_element(page.by.CSS_SELECTOR, ".flag").is_displayed()


def test_small_run_renders_every_event_and_shows_details_on_click(
    tmp_path: Path, page: Page
) -> None:
    run_id, path, trace = run_and_render(ROOT / "examples" / "support_desk.py", tmp_path)
    assert trace["events"] == 16
    html = path.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html
    page.open(path)
    # Small runs start fully open, and every row fits in view.
    assert page.total_rows() == 16
    assert len(page.rows(".row.event")) == 16
    assert len(page.driver.find_elements(page.by.CSS_SELECTOR, "#timeline circle")) == 16
    assert len(page.driver.find_elements(page.by.CSS_SELECTOR, "#sequence g.ev")) == 16
    lanes = [
        t.text for t in page.driver.find_elements(page.by.CSS_SELECTOR, "#timeline text.lane-label")
    ]
    assert lanes == ["client", "triage", "billing", "tech", "general"]
    # Click the fifth arrow of the sequence diagram: its envelope appears in the panel.
    target = page.driver.find_elements(page.by.CSS_SELECTOR, "#sequence g.ev")[4]
    event_id = target.get_attribute("data-event")
    target.find_element(page.by.TAG_NAME, "text").click()  # its label, a precise target
    envelope = json.loads(page.find("#envelope").text)
    assert envelope["id"] == event_id
    assert envelope["specversion"] == "1.0"
    assert envelope["runid"] == run_id
    panel = page.find("#detail-body").text
    assert "Deliveries" in panel
    assert "handled" in panel
    # The clicked event is marked in the tree too.
    assert page.find(".row.selected").get_attribute("data-event") == event_id
