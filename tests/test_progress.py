"""progress.json (systems/progress.py) and the web app's logic without a browser: the prompt state
and its prompt.json, and a failing run reported with train.py's own message."""
import json
import time

import numpy as np
import pytest

from sam_utils.errors import PromptError
from sam_utils.prompts import load_prompt_file
from systems.progress import MAX_LOSS_POINTS, ProgressLog, read_progress
from webapp.runs import RunManager, done_text, run_silhouette, run_warnings
from webapp.scene import PromptState, SceneData

KEYS = {"status", "stage", "iteration", "until", "round", "n_accepted", "n_views", "loss", "contact_sheet",
        "error", "updated"}


def test_progress_log_schema_throttle_and_thinning(tmp_path):
    log = ProgressLog(tmp_path, min_interval=3600.0)
    assert read_progress(tmp_path) is None                              # nothing before the first call
    log.start("lift (round 0)", until=5000)
    first = read_progress(tmp_path)
    assert set(first) == KEYS and first["status"] == "running" and first["until"] == 5000
    for it in range(1, 2001):
        log.step(it, 1.0 / it)
    assert read_progress(tmp_path)["iteration"] == 0                    # throttled: no rewrite within the interval
    sheet = tmp_path / "masks" / "round_01" / "contact_sheet.png"
    log.round({"round": 1, "n_accepted": 5}, sheet, n_views=8)
    p = read_progress(tmp_path)
    assert (p["round"], p["n_accepted"], p["n_views"], p["iteration"]) == (1, 5, 8, 2000)
    assert p["contact_sheet"] == "masks/round_01/contact_sheet.png"     # relative to exp_dir
    loss = np.array(p["loss"])
    assert len(loss) <= MAX_LOSS_POINTS and loss[0, 0] == 1 and loss[-1, 0] > 1900
    assert np.all(np.diff(loss[:, 0]) > 0) and np.allclose(loss[:, 1], 1.0 / loss[:, 0])
    log.error("PromptError: bad click")
    assert read_progress(tmp_path)["status"] == "error" and read_progress(tmp_path)["error"] == "PromptError: bad click"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_progress_step_writes_once_the_interval_has_passed(tmp_path):
    log = ProgressLog(tmp_path, min_interval=2.0)
    log.start("train", 100)
    log.step(1)
    assert read_progress(tmp_path)["iteration"] == 0                    # just written by start()
    time.sleep(2.05)
    log.step(2)
    assert read_progress(tmp_path)["iteration"] == 2


def test_prompt_state_clicks_undo_box_and_prompt_json(tiny_scene, tmp_path):
    st = PromptState(view=0)
    assert not st.usable()
    st.click(40.0, 30.0, "positive")
    st.click(5.0, 6.0, "negative")
    st.click(20.0, 10.0, "box")
    assert st.box is None and st.corner == [20.0, 10.0]
    st.click(70.0, 60.0, "box")
    assert st.box == [20.0, 10.0, 70.0, 60.0] and st.corner is None
    st.undo()
    assert st.box is None and st.corner == [20.0, 10.0]
    st.undo()
    st.undo()
    assert st.labels == [1] and st.usable()
    st.clear()
    assert not st.usable()
    st.undo()
    assert st.points == [[40.0, 30.0]]
    st.select_view(3)
    assert st.view == 3 and not st.points and not st.history

    scene_copy = tmp_path / "scene"
    scene_copy.mkdir()
    (scene_copy / "image").symlink_to(tiny_scene / "image")
    scene = SceneData(scene_copy, segmenter_factory=lambda: None)
    st = PromptState(view=2)
    st.click(40.0, 30.0, "positive")
    st.click(5.0, 6.0, "negative")
    st.set_box([10.0, 8.0, 80.0, 60.0])
    path = scene.write_prompt(st)
    assert json.loads(path.read_text()) == {"view": 2, "positive": [[40.0, 30.0]], "negative": [[5.0, 6.0]],
                                            "box": [10.0, 8.0, 80.0, 60.0]}
    p = load_prompt_file(path)                                           # the pipeline reads it back
    assert p.view == 2 and p.n_positive == 1 and np.allclose(p.box, [10, 8, 80, 60])
    st.click(500.0, 30.0, "positive")                                    # outside the 96x72 view
    with pytest.raises(PromptError, match="outside the image"):
        scene.write_prompt(st)


def _wait(runs: RunManager, timeout: float = 240.0) -> dict:
    t0 = time.time()
    while runs.running() and time.time() - t0 < timeout:
        time.sleep(0.5)
    return runs.status()


def test_failed_runs_show_the_command_line_message(tiny_scene, tmp_path):
    """A conf error (before the trainer exists) shows train.py's output; an error inside the run
    (a prompt off the image) is in progress.json with its named message, as on the command line."""
    bad_conf = RunManager("confs/tiny.conf", tiny_scene, [f'general.base_exp_dir = "{tmp_path / "a"}"',
                                                          "train.no_such_key = 1"])
    assert bad_conf.status()["status"] == "idle"
    assert bad_conf.start().startswith("started")
    assert "already" in bad_conf.start() or not bad_conf.running()     # a second start is refused while it runs
    st = _wait(bad_conf)
    assert st["status"] == "error" and st["returncode"] != 0
    assert "error: unknown conf key(s)" in st["log_tail"] and "train.no_such_key" in st["log_tail"]

    scene = tmp_path / "scene"
    scene.mkdir()
    for name in ("image", "mask", "cameras_sphere.npz", "gt"):
        (scene / name).symlink_to(tiny_scene / name)
    (scene / "prompt.json").write_text(json.dumps({"view": 0, "positive": [[500, 10]], "negative": [], "box": None}))
    runs = RunManager("confs/tiny.conf", scene, [f'general.base_exp_dir = "{tmp_path / "b"}"'])
    runs.start()
    st = _wait(runs)
    assert st["status"] == "error"
    assert st["error"].startswith("PromptError:") and "outside the image" in st["error"]
    assert read_progress(runs.exp_dir)["status"] == "error"
    assert "error: " in st["log_tail"] and "outside the image" in st["log_tail"]   # the command line's one line


def test_a_done_run_shows_its_mesh_and_the_liftings_warnings(tmp_path):
    """The page's text once a run is done: the mesh, and each warning of masks/final.json (a rolled-back
    round, a prompt view that lost its mask); a run without that file (full scene) has none."""
    assert run_warnings(tmp_path) == []
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "final.json").write_text(json.dumps({"final": True, "warnings": ["rolled back to round 2"]}))
    dl = {"n_vertices": 10, "n_faces": 16, "mesh": "target.ply", "warnings": run_warnings(tmp_path)}
    text = done_text(dl)
    assert text.startswith("mesh: 10 vertices, 16 faces") and "**warning**: rolled back to round 2" in text
    assert "empty" in done_text({**dl, "n_faces": 0, "warnings": []}) and "warning" not in done_text({**dl, "warnings": []})
    # the silhouette check train.py kept (where the conf names masks): mean, worst view, where the picture is
    assert run_silhouette(tmp_path) is None and "silhouette" not in text
    (tmp_path / "meshes").mkdir()
    (tmp_path / "meshes" / "target_silhouette.json").write_text(json.dumps(
        {"mean_iou": 0.93, "per_view": [0.95, 0.88, 0.96], "mask_dir": "mask"}))
    sil = run_silhouette(tmp_path)
    assert sil["worst_view"] == 1 and sil["sheet"] == tmp_path / "meshes" / "target_silhouette.jpg"
    assert "silhouette against `mask/`: mean IoU 0.930 · worst view 1: 0.880" in done_text({**dl, "silhouette": sil})
