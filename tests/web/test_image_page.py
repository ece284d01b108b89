"""Image mode in Chromium against a real server: every mask the page shows is the server's mask for the
prompts the page sent (read back from the canvas pixels), and the download holds the same masks."""

from __future__ import annotations

import io
import json
import zipfile

import cv2
import httpx
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tests.web.conftest import API_KEY, canvas_rgb, click_at, open_page, page_point

CANVAS = "#image-canvas"
EXAMPLE_HW = (360, 480)  # service/web/example.jpg


@pytest.fixture
def image_page(browser, server):
    """The page with the example image opened (uploaded once through /v1/embed)."""
    context, page, errors = open_page(browser, server)
    with page.expect_response(lambda r: r.url.endswith("/v1/embed")) as embed:
        page.click("#example")
    assert embed.value.status == 200
    page.wait_for_selector("#image-status[data-state=ready]")
    yield page, errors
    context.close()
    assert not errors, errors


def server_masks(server, body: dict) -> list[np.ndarray]:
    """The masks /v1/segment answers for a request body the page sent, decoded."""
    r = httpx.post(f"{server.url}/v1/segment", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    return [mask_utils.decode({"size": m["size"], "counts": m["counts"].encode()}).astype(bool)
            for m in r.json()["objects"][0]["masks"]]


def prompt_and_wait(page, action) -> dict:
    """Do `action` (a click or drag), wait for the /v1/segment it sends and for the page to draw the answer."""
    with page.expect_request(lambda r: r.url.endswith("/v1/segment")) as req:
        action()
    page.wait_for_selector(f"{CANVAS}[data-pending='0']")
    return json.loads(req.value.post_data)


def marker_zone(shape, points, box=None, radius=6, band=3) -> np.ndarray:
    """Pixels the click markers and the box outline may cover (drawn on top of the masks)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    zone = np.zeros(shape, bool)
    for x, y in points:
        zone |= (xx - (x + 0.5)) ** 2 + (yy - (y + 0.5)) ** 2 <= radius**2
    if box is not None:
        x0, y0, x1, y1 = box
        outer = (xx >= x0 - band) & (xx <= x1 + band) & (yy >= y0 - band) & (yy <= y1 + band)
        inner = (xx > x0 + band) & (xx < x1 - band) & (yy > y0 + band) & (yy < y1 - band)
        zone |= outer & ~inner
    return zone


def assert_shows(before: np.ndarray, after: np.ndarray, mask: np.ndarray, zone: np.ndarray) -> None:
    """The pixels that changed are exactly the mask's (away from the markers)."""
    assert mask[~zone].sum() > 20, "the server's mask is (nearly) empty: the check would prove nothing"
    changed = np.any(after != before, axis=-1)
    wrong = (changed != mask) & ~zone
    assert wrong.sum() == 0, f"{wrong.sum()} pixels differ from the server's mask (of {mask.sum()})"


def test_click_draws_the_servers_mask(image_page, server, screenshot_dir):
    page, _ = image_page
    before = canvas_rgb(page, CANVAS)
    canvas_box = page.locator(CANVAS).bounding_box()
    candidates_box = page.locator("#candidates").bounding_box()
    body = prompt_and_wait(page, lambda: click_at(page, CANVAS, 330, 170))
    assert body["objects"] == [{"points": [[330, 170]], "labels": [1]}]
    assert body["multimask_output"] is True, "one click is ambiguous: the page asks for three candidates"
    assert "image" not in body and len(body["image_id"]) == 64, "a click sends the image_id, not the image"
    after = canvas_rgb(page, CANVAS)
    masks = server_masks(server, body)
    assert after.shape[:2] == EXAMPLE_HW
    assert_shows(before, after, masks[0], marker_zone(EXAMPLE_HW, [(330, 170)]))
    # no layout jump while masks arrive: the picture and the candidates bar stay where they were
    assert page.locator(CANVAS).bounding_box() == canvas_box
    assert page.locator("#candidates").bounding_box() == candidates_box
    # the three candidates: picking the second shows the server's second mask
    assert page.locator("#candidates button:not([disabled])").count() == 3
    page.keyboard.press("m")
    assert page.locator("#candidates button[aria-pressed=true]").inner_text().startswith("2")
    assert_shows(before, canvas_rgb(page, CANVAS), masks[1], marker_zone(EXAMPLE_HW, [(330, 170)]))
    page.click("#candidates button[data-i='0']")
    # a box for a second object (N), then a screenshot of the mode
    page.keyboard.press("n")
    x0, y0 = page_point(page, CANVAS, 40, 200)
    x1, y1 = page_point(page, CANVAS, 160, 330)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=3)
    prompt_and_wait(page, lambda: (page.mouse.move(x1, y1, steps=3), page.mouse.up()))
    assert page.locator("#objects li.object").count() == 2
    page.screenshot(path=str(screenshot_dir / "image.png"))


def test_box_drag(image_page, server):
    page, _ = image_page
    before = canvas_rgb(page, CANVAS)
    x0, y0 = page_point(page, CANVAS, 250, 100)
    x1, y1 = page_point(page, CANVAS, 420, 260)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    body = prompt_and_wait(page, lambda: (page.mouse.move(x1, y1, steps=4), page.mouse.up()))
    (obj,) = body["objects"]
    assert set(obj) == {"box"} and body["multimask_output"] is False
    assert np.allclose(obj["box"], [250, 100, 421, 261], atol=1), obj["box"]
    after = canvas_rgb(page, CANVAS)
    assert_shows(before, after, server_masks(server, body)[0], marker_zone(EXAMPLE_HW, [], obj["box"]))


def test_negative_click_and_undo(image_page, server):
    page, _ = image_page
    before = canvas_rgb(page, CANVAS)
    prompt_and_wait(page, lambda: click_at(page, CANVAS, 330, 170))
    one = canvas_rgb(page, CANVAS)
    body = prompt_and_wait(page, lambda: click_at(page, CANVAS, 300, 250, button="right"))
    assert body["objects"] == [{"points": [[330, 170], [300, 250]], "labels": [1, 0]}]
    assert body["multimask_output"] is False
    zone = marker_zone(EXAMPLE_HW, [(330, 170), (300, 250)])
    assert_shows(before, canvas_rgb(page, CANVAS), server_masks(server, body)[0], zone)
    page.keyboard.down("Shift")
    body = prompt_and_wait(page, lambda: click_at(page, CANVAS, 100, 100))
    page.keyboard.up("Shift")
    assert body["objects"][0]["labels"] == [1, 0, 0], "shift + click excludes too"
    # undo twice: back to the first click's request and picture
    prompt_and_wait(page, lambda: page.keyboard.press("z"))
    body = prompt_and_wait(page, lambda: page.keyboard.press("Control+z"))
    assert body["objects"] == [{"points": [[330, 170]], "labels": [1]}]
    assert np.array_equal(canvas_rgb(page, CANVAS), one)
    # hide, delete, clear
    page.keyboard.press("h")
    assert np.array_equal(canvas_rgb(page, CANVAS), before), "a hidden object is not drawn"
    page.keyboard.press("Delete")
    assert page.locator("#objects li.object").count() == 0
    assert np.array_equal(canvas_rgb(page, CANVAS), before)


def test_segment_everything(image_page, server):
    page, _ = image_page
    before = canvas_rgb(page, CANVAS)
    page.click(".settings summary")
    page.select_option("#everything-points", "8")
    page.fill("#everything-iou", "0")      # random weights: the default thresholds would keep nothing
    page.fill("#everything-stability", "0")
    page.locator("#everything-stability").blur()  # keys typed into a field are not shortcuts
    with page.expect_request(lambda r: r.url.endswith("/v1/segment/everything")) as req:
        page.keyboard.press("e")
    page.wait_for_selector("#image-status:has-text('Segment everything:')")
    body = json.loads(req.value.post_data)
    assert body["points_per_side"] == 8 and "image" not in body
    r = httpx.post(f"{server.url}/v1/segment/everything", json=body, headers={"X-API-Key": API_KEY}, timeout=120)
    anns = r.json()["annotations"]
    assert len(anns) >= 1, "nothing to show: the check would prove nothing"
    assert page.locator("#objects li.object").count() == len(anns)
    assert page.inner_text("#image-status").startswith(f"Segment everything: {len(anns)} mask")
    union = np.zeros(EXAMPLE_HW, bool)
    for a in anns:
        union |= mask_utils.decode({"size": a["segmentation"]["size"],
                                    "counts": a["segmentation"]["counts"].encode()}).astype(bool)
    changed = np.any(canvas_rgb(page, CANVAS) != before, axis=-1)
    assert np.array_equal(changed, union)


def test_download_zip_of_pngs_and_coco_json(image_page, server, tmp_path):
    page, _ = image_page
    body = prompt_and_wait(page, lambda: click_at(page, CANVAS, 330, 170))
    page.keyboard.press("n")
    body2 = prompt_and_wait(page, lambda: click_at(page, CANVAS, 80, 300))
    with page.expect_download() as dl:
        page.click("#download")
    assert dl.value.suggested_filename == "example_masks.zip"
    path = tmp_path / "masks.zip"
    dl.value.save_as(path)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert sorted(z.namelist()) == ["example_coco.json", "example_object_1.png", "example_object_2.png"]
        coco = json.loads(z.read("example_coco.json"))
        pngs = {n: cv2.imdecode(np.frombuffer(z.read(n), np.uint8), cv2.IMREAD_GRAYSCALE) > 127
                for n in z.namelist() if n.endswith(".png")}
    assert coco["images"] == [{"id": 1, "file_name": "example.jpg", "width": 480, "height": 360}]
    for ann, b, png in zip(coco["annotations"], (body, body2), ("example_object_1.png", "example_object_2.png")):
        expected = server_masks(server, b)[0]
        got = mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
        assert np.array_equal(got.astype(bool), expected)
        assert np.array_equal(pngs[png], expected)
        assert ann["area"] == int(expected.sum())
        ys, xs = np.nonzero(expected)
        assert ann["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def test_api_key_needed_then_given(browser, server):
    context, page, errors = open_page(browser, server, key=None, allow_errors=("401",))
    try:
        page.wait_for_selector("#key-form[data-state=needed]")
        assert "API key" in page.inner_text("#message")
        page.fill("#api-key", "wrong-key")
        page.click("#key-use")
        page.wait_for_selector("#message:has-text('The key given was refused')")
        page.fill("#api-key", API_KEY)
        page.click("#key-use")
        page.wait_for_selector("#model-info[data-state=random]")
        assert page.evaluate("() => sessionStorage.getItem('sam2-service.api_key')") == API_KEY
        assert not errors, errors
    finally:
        context.close()


def test_errors_are_explained(browser, server, tmp_path):
    context, page, errors = open_page(browser, server, allow_errors=("Failed to load resource",))
    try:
        bad = tmp_path / "not-an-image.png"
        bad.write_bytes(b"hello")
        page.set_input_files("#image-file", str(bad))
        page.wait_for_selector("#message[data-level=error]:has-text('cannot show not-an-image.png')")
        with page.expect_response(lambda r: r.url.endswith("/v1/embed")):
            page.click("#example")
        page.wait_for_selector("#image-status[data-state=ready]")

        # the server answers 503 overloaded (RFC 9457 body, Retry-After): the page says so in words
        def overloaded(route):
            route.fulfill(status=503, headers={"Retry-After": "2", "Content-Type": "application/problem+json"},
                          body=json.dumps({"type": "urn:sam2-service:problem:overloaded", "title": "Overloaded",
                                           "status": 503, "detail": "64 jobs are waiting"}))
        page.route("**/v1/segment", overloaded)
        prompt_and_wait(page, lambda: click_at(page, CANVAS, 330, 170))
        assert page.inner_text("#message") == "The server is overloaded. Try again in 2 s."
        page.unroute("**/v1/segment")

        # the server has forgotten the image (evicted): the page uploads it again and the click goes through
        forgotten = []

        def forget_once(route):
            if forgotten:
                return route.continue_()
            forgotten.append(route.request.post_data)
            route.fulfill(status=404, headers={"Content-Type": "application/problem+json"},
                          body=json.dumps({"type": "urn:sam2-service:problem:image-id-unknown", "status": 404,
                                           "title": "Unknown image_id", "detail": "evicted"}))
        page.route("**/v1/segment", forget_once)
        page.keyboard.press("n")
        with page.expect_response(lambda r: r.url.endswith("/v1/embed")) as again:
            click_at(page, CANVAS, 80, 300)
        assert again.value.status == 200
        page.wait_for_selector(f"{CANVAS}[data-pending='0']")
        page.wait_for_selector("#objects li[data-obj-id='2'] .note:has-text('IoU')")
        assert len(forgotten) == 1
        assert not errors, errors
    finally:
        context.close()


def test_phone_width(browser, server, screenshot_dir):
    context, page, errors = open_page(browser, server, viewport=(390, 844))
    try:
        with page.expect_response(lambda r: r.url.endswith("/v1/embed")):
            page.click("#example")
        page.wait_for_selector("#image-status[data-state=ready]")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, "no sideways scrolling"
        box = page.locator(CANVAS).bounding_box()
        assert box["width"] <= 390 and box["width"] > 300
        prompt_and_wait(page, lambda: click_at(page, CANVAS, 330, 170))
        assert page.locator("#objects li.object").count() == 1
        page.screenshot(path=str(screenshot_dir / "phone.png"), full_page=True)
        assert not errors, errors
    finally:
        context.close()
