"""The web app in real headless Chromium (Debian's chromium driven by Playwright): the page loads a
small synthetic scene, a click on the target returns a mask overlay close to the ground-truth mask,
a tiny run starts from the page (a second start is refused), its progress advances, and the finished
mesh is offered for download in three formats that trimesh loads with the same vertices.

Screenshots of each step go to the test's tmp folder (printed); with NTO3D_DOCS_SCREENSHOT=PATH the
page with the mask is also saved there, small (docs/app.png in the README). The run's quality is
not under test here (tests/test_nto3d_pipeline.py): its conf is cut to 60 CPU iterations of lifting
and no target stage, with the target's occupancy threshold at 0 (the mesh is then the SDF's largest
component), so that so short a run still leaves a non-empty mesh to download.
"""
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import cv2
import numpy as np
import pytest
import trimesh
from PIL import Image

from evaluation.metrics import mask_iou
from tests.conftest import ROOT
from webapp.scene import MASK_ALPHA, MASK_RGB, display_image

CHROMIUM = os.environ.get("NTO3D_CHROMIUM", "/usr/bin/chromium")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
RUN_OVERRIDES = ["nto3d.warmup_iters = 40", "nto3d.round_iters = 20", "nto3d.lifting.max_rounds = 1",
                 "nto3d.target.iters = 0", "nto3d.lifting.render_level = 2", "nto3d.lifting.final_render_level = 2",
                 "nto3d.target.mesh_cut = occupancy", "nto3d.target.mesh_occupancy_threshold = 0.0",  # a mesh from 40 iterations
                 "validate.mesh_resolution = 48",
                 "validate.resolution_level = 4",
                 "train.log_every = 10", "train.save_every = 0"]
CLICK_IOU = 0.85            # GrabCut from the one click: measured 0.97 on this scene
RUN_TIMEOUT_S = 420         # ~100 s on an idle 2-core machine; generous for a shared one

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (requirements-dev.txt)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} not found: scripts/setup_env.sh installs Debian's chromium (as root); "
                "browser test skipped", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from datasets.synthetic import make_scene

    return make_scene("easy", tmp_path_factory.mktemp("app") / "small", n_views=8, width=160, height=120,
                      seed=0, gt_resolution=64)


@pytest.fixture(scope="module")
def app(scene, tmp_path_factory):
    exp = tmp_path_factory.mktemp("app_exp")
    port = _free_port()
    cmd = [sys.executable, "app.py", "--data", str(scene), "--conf", "confs/tiny.conf", "--port", str(port),
           "--override", f'general.base_exp_dir = "{exp}"']
    for line in RUN_OVERRIDES:
        cmd += ["--override", line]
    log = open(exp / "app.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with {proc.returncode}: {(exp / 'app.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("app.py did not listen within 90 s")
    yield url, exp
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _shot(page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _fetch(page, src: str) -> bytes:
    resp = page.request.get(urljoin(page.url, src))
    assert resp.ok, f"GET {src}: {resp.status}"
    return resp.body()


def _overlay_mask(shown: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Pixels of the page's image that carry the mask tint (webapp.scene.overlay), (H,W) bool."""
    tinted = (1 - MASK_ALPHA) * original.astype(np.float32) + MASK_ALPHA * MASK_RGB
    close = np.abs(shown.astype(np.float32) - tinted).max(-1) <= 3
    changed = np.abs(shown.astype(np.float32) - original.astype(np.float32)).max(-1) > 3
    return close & changed


TIMER_LINE = re.compile(r"^\s*(processing|queue:\s*\d+\s*/\s*\d+)?\s*\|?\s*"
                        r"(\d+(\.\d+)?\s*s?\s*/\s*)?\d+(\.\d+)?\s*s\s*$")


def _status(page) -> str:
    """The run status as the page words it, without gradio's progress text ("0.1s", "queue: 1/1 | 0.1/0.1s"):
    a poll that is still pending when the test reads the component shows it in front of the status on a
    busy machine, whatever the event's show_progress says."""
    lines = page.locator("#run_status").inner_text().splitlines()
    return "\n".join(line for line in lines if not TIMER_LINE.match(line)).strip()


def _iteration(text: str) -> int:
    m = re.search(r"iteration (\d+)", text)
    return int(m.group(1)) if m else -1


def test_click_run_and_download_in_chromium(app, scene, tmp_path):
    url, exp = app
    shots = tmp_path / "screens"
    shots.mkdir()
    external = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda r: external.append(r.url)
                if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
        page.goto(url, wait_until="load")
        img = page.locator("#prompt_image img")
        img.wait_for(timeout=30000)
        page.locator("#views img").first.wait_for(timeout=30000)
        _shot(page, shots, "1_loaded")

        # one positive click on the target (the scene's own click, a deep interior pixel)
        original = cv2.cvtColor(cv2.imread(str(scene / "image" / "000.png")), cv2.COLOR_BGR2RGB)
        shown0 = display_image(original)
        s = shown0.shape[1] / original.shape[1]
        x, y = json.loads((scene / "prompt.json").read_text())["positive"][0]
        box = img.bounding_box()
        nat_w, nat_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
        assert (nat_w, nat_h) == (shown0.shape[1], shown0.shape[0])
        t0 = time.time()
        img.click(position={"x": ((x + 0.5) * s) * box["width"] / nat_w, "y": ((y + 0.5) * s) * box["height"] / nat_h})
        page.wait_for_function("() => document.querySelector('#prompt_info').innerText.includes('mask:')",
                               timeout=20000)
        latency = time.time() - t0
        _shot(page, shots, "2_mask")
        shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(_fetch(page, img.get_attribute("src")), np.uint8),
                                          cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        gt = cv2.imread(str(scene / "gt" / "target_mask" / "000.png"), cv2.IMREAD_GRAYSCALE)
        gt_shown = display_image(np.repeat(gt[..., None], 3, 2))[..., 0] > 127
        iou = mask_iou(_overlay_mask(shown, shown0), gt_shown)
        print(f"click -> mask overlay in {latency:.2f} s, IoU with gt/target_mask {iou:.3f}")
        assert iou > CLICK_IOU

        # undo removes the point (no mask), a second undo of nothing keeps it so; clear likewise
        page.locator("#undo").click()
        page.wait_for_function("() => !document.querySelector('#prompt_info').innerText.includes('mask:')")
        img.click(position={"x": ((x + 0.5) * s) * box["width"] / nat_w, "y": ((y + 0.5) * s) * box["height"] / nat_h})
        page.wait_for_function("() => document.querySelector('#prompt_info').innerText.includes('mask:')")

        # start the run; a second start while it runs is refused
        page.locator("#start").click()
        page.wait_for_function("() => document.querySelector('#start_message').innerText.includes('started')",
                               timeout=20000)
        written = json.loads((scene / "prompt.json").read_text())
        assert written["view"] == 0 and len(written["positive"]) == 1
        assert np.allclose(written["positive"][0], [x, y], atol=1.0 / s)        # full-resolution pixels
        page.locator("#start").click()
        page.wait_for_function("() => document.querySelector('#start_message').innerText.includes('already')",
                               timeout=20000)
        seen, t_start = [], time.time()
        while time.time() - t_start < RUN_TIMEOUT_S:
            text = _status(page)
            seen.append(_iteration(text))
            if text.startswith("done") or text.startswith("error"):
                break
            if seen[-1] > 0 and not (shots / "3_running.png").exists():
                _shot(page, shots, "3_running")
            time.sleep(1.0)
        text = _status(page)
        if text.startswith("error"):
            pytest.fail("the run failed: " + page.locator("#run_error textarea").input_value()[-3000:])
        assert text.startswith("done"), f"no result within {RUN_TIMEOUT_S} s: {text}"
        assert "silhouette against gt/target_mask/: mean IoU" in text.replace("`", ""), text   # train.py's check
        assert len({i for i in seen if i > 0}) >= 2, f"progress did not advance: iterations {seen}"
        page.locator("#downloads a").first.wait_for(timeout=60000)
        page.locator("#mesh_view canvas").wait_for(timeout=30000)
        view3d = page.locator("#mesh_view canvas")
        view3d.scroll_into_view_if_needed()
        page.wait_for_timeout(3000)                                   # let the 3D view load and draw
        drawn = cv2.imdecode(np.frombuffer(view3d.screenshot(), np.uint8), cv2.IMREAD_COLOR).reshape(-1, 3)
        background = np.median(drawn, 0)
        assert (np.abs(drawn.astype(int) - background).max(1) > 30).mean() > 0.005, "the 3D view draws nothing"
        _shot(page, shots, "4_done")
        if os.environ.get("NTO3D_DOCS_SCREENSHOT"):
            _small_screenshot(page, Path(os.environ["NTO3D_DOCS_SCREENSHOT"]))

        links = {Path(a.get_attribute("href").split("?")[0]).suffix: a.get_attribute("href")
                 for a in page.locator("#downloads a").all()}
        assert {".ply", ".obj", ".glb"} <= set(links), links
        counts = {}
        for ext, href in links.items():
            path = tmp_path / f"download{ext}"
            path.write_bytes(_fetch(page, href))
            mesh = trimesh.load(path, force="mesh")
            assert len(mesh.faces) > 0, ext
            counts[ext] = len(mesh.vertices)
        assert len(set(counts.values())) == 1, counts
        browser.close()
    report = (exp / "report.html").read_text()                       # train.py's run report
    assert all(f'id="{i}"' in report for i in ("img-prompt", "img-accepted", "img-sheet-01", "img-render-0"))
    assert not external, f"the page requested outside hosts: {external[:5]}"
    print(f"screenshots in {shots}")


def _small_screenshot(page, out: Path, width: int = 900) -> None:
    """The page, scaled to `width` and palette-quantised: a small PNG for the README."""
    img = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=128).save(out, optimize=True)
