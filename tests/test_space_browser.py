"""The Space in a real browser: headless Chromium driven by Playwright.

Runs in CI (which installs Debian's `chromium` and `pip install playwright`; never
`playwright install`); skipped where either is missing. Set SPACE_SCREENSHOT_DIR=docs to refresh
the screenshots in docs/ (space_classification.png, ...); for README's screenshots also point
SPACE_HEADS_DIR at the embedded default's heads (outputs/benchmark/heads) and SPACE_RESULTS at its
results.json, so that the pictures show real heads and measured numbers:

    SPACE_SCREENSHOT_DIR=docs SPACE_HEADS_DIR=outputs/benchmark/heads \
        SPACE_RESULTS=outputs/benchmark/results.json python -m pytest tests/test_space_browser.py
"""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the Space needs `pip install hf-ssl-robust[space]`")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs `pip install playwright`")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("needs Chromium (Debian: apt-get install chromium chromium-driver)", allow_module_level=True)

from test_space import fake_records, free_port, load_app, make_backend  # noqa: E402

from hf_ssl_robust.results import display_name, load_records  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000  # the first request of a task trains its tiny head


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    backend = make_backend(tmp_path_factory, heads_dir=os.environ.get("SPACE_HEADS_DIR"))
    results = Path(os.environ.get("SPACE_RESULTS") or tmp_path_factory.mktemp("browser_results") / "results.json")
    if not os.environ.get("SPACE_RESULTS"):
        results.write_text(json.dumps(fake_records()))
    app = load_app()
    demo = app.build_demo(backend, results=[str(results)])
    demo.queue(default_concurrency_limit=1, max_size=8)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=app.CSS)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#run")
            page.backend = backend
            page.results = load_records(results)
            yield page
            browser.close()
    finally:
        demo.close()


def snapshot(page, tmp_path, name):
    """Full-page PNG in tmp_path (and in $SPACE_SCREENSHOT_DIR), palette-compressed below 400 KB."""
    from PIL import Image

    path = tmp_path / f"space_{name}.png"
    page.screenshot(path=str(path), full_page=True)
    img = Image.open(path).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    assert path.stat().st_size < 400_000
    if os.environ.get("SPACE_SCREENSHOT_DIR"):
        out = Path(os.environ["SPACE_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / path.name)
    return path


INPUT_SRC = "() => { const i = document.querySelector('#input_image img'); return i ? i.src : null; }"
ATTACK_LABELS = {"classification": "PGD (on the classifier)", "segmentation": "SegPGD (on the segmenter)", "depth": "DepthPGD (on the depth head)"}


def pick_task(page, task):
    """Select a task and wait until the attack choices follow it (a click on Run before that
    would send the previous task's attack)."""
    page.get_by_role("tab", name="Attack").click()  # tests run in any order: the Results tab may be open
    page.get_by_label(task, exact=True).check()
    page.get_by_label(ATTACK_LABELS[task], exact=True).wait_for()


def pick_example(page, n):
    """Click example n and wait until the input shows a new image (a click on Run before that
    would send the previous input, or none)."""
    before = page.evaluate(INPUT_SRC)
    page.locator("#examples img").nth(n).click()
    wait_new_input(page, before)


def wait_new_input(page, before):
    page.wait_for_function(f"before => {{ const s = ({INPUT_SRC})(); return s && s !== before; }}", arg=before)


def run_attack(page, task):
    page.locator("#run").click()
    # done when the status names the task, or fail at once with the message of an error the app shows
    page.wait_for_function(
        "task => { const t = document.querySelector('#status textarea');"
        " return (t && t.value.includes(' · ' + task + ' · ')) || document.querySelector('.toast-body.error'); }",
        arg=task,
    )
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()
    page.wait_for_function("() => document.querySelector('#metrics') && document.querySelector('#metrics').innerText.includes('linf_255')")
    page.wait_for_selector("#adv_image img")
    page.wait_for_selector("#perturbation img")
    page.wait_for_selector("#losses img")


def test_classification_upload(page, tmp_path):
    example = next(p for p in page.backend.examples if Path(p).stem == "shapesworld_0")
    pick_task(page, "classification")
    before = page.evaluate(INPUT_SRC)
    page.locator("#input_image input[type=file]").set_input_files(example)
    wait_new_input(page, before)
    run_attack(page, "classification")
    for side in ("#clean_pred", "#adv_pred"):  # top-5 bars with ShapesWorld class names
        text = page.locator(side).inner_text()
        assert any(name in text for name in ("disc", "square", "triangle", "star", "cross", "ring")), text
    snapshot(page, tmp_path, "classification")


def test_segmentation_example(page, tmp_path):
    pick_task(page, "segmentation")
    pick_example(page, 2)  # a ShapesWorld scene
    run_attack(page, "segmentation")
    page.wait_for_selector("#clean_seg img")
    page.wait_for_selector("#adv_seg img")
    assert "background" in page.locator("#clean_seg").inner_text()  # the legend
    snapshot(page, tmp_path, "segmentation")


def test_depth_example(page, tmp_path):
    pick_task(page, "depth")
    pick_example(page, 1)
    run_attack(page, "depth")
    page.wait_for_selector("#depth img")
    assert "depth_mean_abs_change_m" in page.locator("#metrics").inner_text()
    snapshot(page, tmp_path, "depth")


def test_results_tab(page, tmp_path):
    page.get_by_role("tab", name="Results").click()
    page.wait_for_function("() => document.querySelector('#results_tables') && document.querySelector('#results_tables').innerText.includes('Table 1')")
    page.wait_for_selector("#curves img")
    leaderboard = page.locator("#leaderboard").inner_text()
    assert all(display_name(r["encoder"]) in leaderboard for r in page.results)
    snapshot(page, tmp_path, "results")


def pick_option(page, elem_id, option):
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_leaderboard_tab(page, tmp_path):
    """The default sources (the committed embedded-default and strength runs): boards with their protocol
    above them, the marker where protocols differ, filters, and the how-to-submit box."""
    page.get_by_role("tab", name="Leaderboard").click()
    page.wait_for_selector(".lb-table table")
    assert "12 boards" in page.locator("#lb_summary").inner_text()
    assert page.locator("div.block.lb-board").count() == 12 and page.locator("div.block.lb-table").count() == 12
    assert "hf-ssl-robust results push" in page.locator("#lb_submit").inner_text()
    pick_option(page, "lb_task", "classification")
    page.wait_for_function("() => document.querySelectorAll('div.block.lb-board').length === 4")
    headings = [page.locator("div.block.lb-board").nth(i).inner_text() for i in range(4)]
    assert all(h.startswith("classification · shapes") and "Protocol: 20 steps" in h for h in headings)
    assert sum("not ranked against each other" in h for h in headings) == 2  # 8/255: 128 vs 256 images
    last = page.locator("div.block.lb-table").nth(3)  # 8/255 on 256 images: the embedded default, DeACL first
    encoders = re.findall(r"shapes-resnet-tiny(?:-deacl)?(?=\s)", last.inner_text())
    assert encoders == ["shapes-resnet-tiny-deacl", "shapes-resnet-tiny"], last.inner_text()
    snapshot(page, tmp_path, "leaderboard")
    pick_option(page, "lb_family", "ResNet")
    pick_option(page, "lb_threat", "L∞ ε = 2/255")
    page.wait_for_function("() => document.querySelectorAll('div.block.lb-board').length === 1")
    assert "ε = 2/255" in page.locator("div.block.lb-board").first.inner_text()
