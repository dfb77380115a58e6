"""bench/lifting_suite.py end to end at a tiny size: one scene x two network seeds, two runs at once
(bench/run.py subprocesses with --propagation), then the table and the summary checked against the
runs' own JSONs."""
import argparse
import html
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from bench import lifting_suite
from bench.target_cut_ab import off_target
from bench.suite_table import summarize_scene, table_row
from evaluation.report import write_report

TINY = ["--scenes", "easy", "--seeds", "2", "--parallel", "2", "--threads", "1", "--views", "4", "--width", "64",
        "--height", "48", "--gt_resolution", "24", "--conf", "confs/tiny.conf", "--target_iters", "5",
        "--timeout", "300", "--cut_ab"]
FAST = ["nto3d.warmup_iters = 10", "nto3d.round_iters = 5", "nto3d.lifting.max_rounds = 1",
        "nto3d.lifting.render_level = 2", "nto3d.lifting.final_render_level = 2", "validate.mesh_resolution = 24",
        "train.save_every = 0"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    argv = TINY + ["--data_root", str(root / "data"), "--exp_root", str(root / "exp"), "--python", sys.executable]
    for o in FAST:
        argv += ["--override", o]
    rc = lifting_suite.main(argv)
    return rc, root, json.loads((root / "exp" / "summary.json").read_text())


def test_the_suite_runs_every_seed_and_keeps_the_runs_apart(suite):
    rc, root, summary = suite
    logs = "\n".join(j["log"] for j in summary["jobs"] if j["rc"] != 0)
    assert rc == 0, f"failed jobs, see {logs}"
    assert [j["name"] for j in summary["jobs"]] == ["make easy", "easy seed 0", "easy seed 1"]
    runs = [json.loads((root / "exp" / "easy" / f"seed{k}" / "run.json").read_text())[0] for k in (0, 1)]
    confs = [(root / "exp" / "easy" / f"seed{k}").rglob("config.conf") for k in (0, 1)]
    seeds = [next(c).read_text() for c in confs]
    assert "seed = 0" in seeds[0] and "seed = 1" in seeds[1]          # general.seed = k reached each run
    assert not list((root / "exp").rglob("checkpoints"))              # deleted once each run ended
    assert len(runs[0]["alone"]) == 4 and runs[1]["alone"] is None      # seed-independent: measured once
    for r in runs:
        assert 0.0 <= r["iou_mean"] <= 1.0 and r["rounds"] == 1
        prop = r["propagation"]
        assert len(prop["iou"]) == 4 and prop["iou_mean"] == pytest.approx(statistics.mean(prop["iou"]))
        assert prop["iou"][0] > 0.5                                   # the prompt view keeps the segmenter's mask


def test_summary_and_table_are_computed_from_the_run_jsons(suite):
    _, root, summary = suite
    runs = {k: json.loads((root / "exp" / "easy" / f"seed{k}" / "run.json").read_text())[0] for k in (0, 1)}
    s = summary["scenes"]["easy"]
    means = [runs[k]["iou_mean"] for k in (0, 1)]
    worst_seed = min((0, 1), key=lambda k: (means[k], k))
    assert s["seeds_ok"] == 2 and s["lifted"]["median"] == pytest.approx(sum(means) / 2)
    assert s["lifted"]["worst"] == pytest.approx(min(means)) and s["lifted"]["worst_seed"] == worst_seed
    assert s["worst_view"]["iou"] == pytest.approx(min(runs[k]["iou_worst"] for k in (0, 1)))
    prop = [runs[k]["propagation"]["iou_mean"] for k in (0, 1)]
    assert s["propagation"]["median"] == pytest.approx(sum(prop) / 2) and s["propagation"]["worst"] == pytest.approx(min(prop))
    assert s["alone"]["worst"] == pytest.approx(min(runs[0]["alone"]))
    assert s["time_s"]["max"] == pytest.approx(max(runs[k]["click_to_mesh_s"] for k in (0, 1)))
    # the scoring against gt (scene and target Chamfer) is timed apart from what a user waits
    assert all(runs[k]["eval_s"] > 0 and runs[k]["click_to_mesh_s"] == pytest.approx(
        runs[k]["total_s"] - runs[k]["eval_s"], abs=0.1) for k in (0, 1))
    row = next(line for line in summary["table"].splitlines() if line.startswith("| `easy`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2/2"
    assert cells[2] == f"{sum(means) / 2:.3f} / **{min(means):.3f}** (s{worst_seed})"
    assert cells[7].startswith(f"{sum(prop) / 2:.3f} / {min(prop):.3f}")
    sil = [runs[k]["silhouette_iou"]["mean"] for k in (0, 1)]           # the target mesh against gt/target_mask
    assert all(0.0 <= v <= 1.0 for v in sil) and s["silhouette"]["worst"] == pytest.approx(min(sil))
    # --summarize rebuilds the same figures from the files alone
    again = root / "again.json"
    lifting_suite.main(TINY + ["--data_root", str(root / "data"), "--exp_root", str(root / "exp"), "--summarize",
                               "--json", str(again), "--copy_to", str(root / "copy")])
    assert json.loads(again.read_text())["scenes"] == summary["scenes"]
    lifting_suite.main(["--seeds", "2", "--exp_root", str(root / "copy"), "--summarize"])  # the copied files alone
    assert json.loads((root / "copy" / "summary.json").read_text())["scenes"] == summary["scenes"]
    for k in (0, 1):                 # the round's contact sheet comes back as a small JPEG beside the run's JSON
        sheet = cv2.imread(str(root / "copy" / "easy" / f"seed{k}" / "round_01.jpg"))
        png = cv2.imread(str(next((root / "exp" / "easy" / f"seed{k}").rglob("round_01/contact_sheet.png"))))
        assert sheet is not None and sheet.shape[:2] == png.shape[:2]        # small sheets keep their size
        # and the target mesh's silhouette sheet (4 views of 64 px -> 2 x 2 tiles of 240 px); none for an empty
        # mesh (a tiny run may find no target)
        sil_sheet = cv2.imread(str(root / "copy" / "easy" / f"seed{k}" / "target_silhouette.jpg"))
        if runs[k]["silhouette_iou"]["mean"] > 0:
            assert sil_sheet is not None and sil_sheet.shape[1] == 2 * 240
        else:
            assert sil_sheet is None
        assert len(runs[k]["prompt_agreement"]) == 2                      # round 1 and the final masks
        assert all(0.0 <= a <= 1.0 for a in runs[k]["prompt_agreement"])


def test_the_cut_ab_meshes_the_same_fields_with_and_without_the_plane_and_one_is_the_runs_own_mesh(suite):
    """--cut_ab: each run's fields meshed without its support plane, cut by it, and cut and filled; the run's own
    target mesh stands for its variant (the fill, where a plane was found) and is not meshed again (that the
    variants mesh the run's fields: tests/test_target_stage.py)."""
    _, root, summary = suite

    def vertices(run: Path, pattern: str) -> np.ndarray:          # an empty mesh (no target found) loads as none
        return np.asarray(trimesh.load(next(run.rglob(pattern)), force="mesh", process=False).vertices)

    for k in (0, 1):
        run = root / "exp" / "easy" / f"seed{k}"
        r = json.loads((run / "run.json").read_text())[0]
        ab = r["cut_ab"]
        assert set(ab) >= {"none", "plane", "fill"} and ab["resolution"] == 24
        own = vertices(run, "meshes/target.ply")
        mine = "fill" if ab["support"] is not None else "none"
        assert ab[mine]["vertices"] == len(own) and np.allclose(vertices(run, f"cut_ab/target_{mine}.ply"), own)
        assert ab[mine]["mesh_s"] is None and ab[mine]["chamfer"] == r.get("chamfer")
        if ab["support"] is not None:                                  # the others are meshed on its fields
            assert ab["none"]["mesh_s"] > 0 and ab["plane"]["mesh_s"] > 0
        if ab["support"] is None:                                      # no plane found: the plane cuts nothing
            assert ab["plane"] == ab["none"] == ab["fill"]
        record = next(run.rglob("masks/final.json"))                         # the run's record of its plane
        final = json.loads(record.read_text())
        assert final["support_plane"] == (None if ab["support"] is None else ab["support"]["plane"])
        page = write_report(record.parent.parent, n_renders=0).read_text()
        assert "support_plane" in page and ("none found" in page) == (ab["support"] is None)
        why = final["support_why"]                                     # the plane, or why none was found
        assert why and (ab["support"] is not None or why in page or html.escape(why) in page)
        assert len(vertices(run, "cut_ab/target_none.ply")) == ab["none"]["vertices"]
    assert "The target mesh's cut on the same fields" in summary["table"]
    assert sum(line.startswith("| easy/seed") for line in summary["table"].splitlines()) == 6


def test_off_target_counts_the_vertices_inside_and_outside_the_exact_target(suite):
    _, root, _ = suite
    scene = next((root / "data").glob("easy_*"))
    gt = trimesh.load(scene / "gt" / "target.ply", process=False)
    exact = off_target(scene / "gt" / "target.ply", scene)
    assert exact["inside"] < 0.01 and exact["outside"] < 0.01
    centre = gt.bounding_box.centroid
    for factor, side in ((1.3, "outside"), (0.7, "inside")):
        path = root / f"scaled_{factor}.ply"
        trimesh.Trimesh((gt.vertices - centre) * factor + centre, gt.faces).export(path)
        off = off_target(path, scene)
        other = "inside" if side == "outside" else "outside"
        assert off[side] > 0.3 and off[other] < 0.05, (factor, off)
    assert off_target(scene / "gt" / "target.ply", root) is None                  # not a synthetic scene


def test_summary_of_failed_and_losing_seeds():
    """A failed seed is counted, not averaged in; a seed wins only when its mean and worst view both beat
    click propagation's."""
    def run(mean, worst, pmean, pworst):
        return {"iou_mean": mean, "iou_worst": worst, "iou_views": [worst, mean], "rounds": 3, "converged": True,
                "total_s": 100.0, "alone": [0.9, 0.8], "propagation": {"iou_mean": pmean, "iou_worst": pworst}}

    s = summarize_scene({0: run(0.96, 0.90, 0.90, 0.80), 1: run(0.95, 0.70, 0.90, 0.80), 2: None,
                         3: run(0.56, 0.19, 0.70, 0.10)})
    assert s["seeds_ok"] == 3 and s["failed_seeds"] == [2]
    assert s["lifted"]["median"] == pytest.approx(0.95) and s["lifted"]["worst"] == pytest.approx(0.56)
    assert s["lifted"]["worst_seed"] == 3 and s["worst_view"] == {"iou": 0.19, "seed": 3, "view": 0}
    assert s["beats_propagation"] == {"seeds": 1, "of": 3}
    assert s["propagation"]["worst_view"] == pytest.approx(0.10)
    assert s["chamfer"] is None                                           # lifting only: no target mesh


def test_the_target_chamfer_is_the_mean_and_the_worst_seed_with_its_terms():
    runs = {k: {"iou_mean": 0.9, "iou_worst": 0.8, "chamfer": {"overall": o, "accuracy": a, "completeness": c},
                "off_target": {"mm": 5.0, "inside": i, "outside": 0.0}}
            for k, (o, a, c, i) in enumerate([(0.5, 0.4, 0.6, 0.0), (0.9, 1.2, 0.6, 0.14), (0.4, 0.3, 0.5, 0.01)])}
    runs[3] = None
    s = summarize_scene(runs)
    c = s["chamfer"]
    assert c["mean"] == pytest.approx(0.6) and c["worst"] == 0.9 and c["worst_seed"] == 1
    assert (c["accuracy"], c["completeness"]) == (1.2, 0.6)
    assert "inside / outside: 14.0 % / 0.0 %" in table_row("occluded", s)       # the worst seed's inner walls


def test_the_target_silhouette_is_the_mean_and_the_worst_seed_with_the_worst_view():
    runs = {k: {"iou_mean": 0.9, "iou_worst": 0.8, "silhouette_iou": {"mean": m, "worst": w}}
            for k, (m, w) in enumerate([(0.98, 0.95), (0.96, 0.97), (0.99, 0.90)])}
    runs[3] = None
    s = summarize_scene(runs)
    assert s["silhouette"] == {"mean": pytest.approx(0.97666, abs=1e-4), "worst": 0.96, "worst_seed": 1,
                               "worst_view": 0.90}
    assert table_row("easy", s).rstrip(" |").endswith("0.977 / **0.960** (s1) (0.900)")


def test_jobs_wait_for_their_scene_and_stop_at_the_deadline(tmp_path):
    """A run whose scene generation failed is skipped; at the deadline running jobs are killed and the rest
    never start (the summary is still written within a device call)."""
    def job(name, code, after=None):
        return lifting_suite.Job(name, [sys.executable, "-c", code], tmp_path / f"{name}.log", after)

    jobs = [job("make a", "raise SystemExit(3)"), job("a seed 0", "pass", after="make a"),
            job("sleepy", "import time; time.sleep(60)"), job("late", "pass")]
    t0 = time.time()
    lifting_suite.run_jobs(jobs, parallel=1, timeout_s=None, env=None, deadline=t0 + 5.0)
    assert time.time() - t0 < 30
    assert {j.name: j.rc for j in jobs} == {"make a": 3, "a seed 0": -1, "sleepy": -9, "late": -2}


def test_a_scan65_folder_is_a_scene_to_run_even_when_scenes_leave_it_out():
    """--scenes thin --scan65 DIR runs dtu_scan65 too (it was silently skipped); without --scan65 it is refused."""
    def scenes(*argv):
        ap = argparse.Namespace(scenes=None, scan65=None, summarize=False, exp_root="nowhere")
        for k, v in zip(argv[::2], argv[1::2]):
            setattr(ap, k, v)
        return lifting_suite.scene_list(ap)
    assert scenes("scenes", ["thin"], "scan65", "d") == ["thin", "dtu_scan65"]
    assert scenes("scenes", ["dtu_scan65", "thin"], "scan65", "d") == ["dtu_scan65", "thin"]
    assert scenes("scenes", ["thin"]) == ["thin"]
    assert scenes("scan65", "d")[-1] == "dtu_scan65" and "border" in scenes("scan65", "d")
    with pytest.raises(SystemExit, match="--scan65"):
        scenes("scenes", ["dtu_scan65"])


def test_a_run_stopped_after_its_lifting_keeps_its_lifting_figures(suite, tmp_path):
    """A run killed in its target stage (no run.json) is rebuilt from the masks it wrote: the same lifting
    figures as its finished JSON, marked partial, counted in the lifted IoU but not as a finished seed;
    a run killed before its lifting ended (no masks/final.json) stays failed."""
    _, root, _ = suite
    done = json.loads((root / "exp" / "easy" / "seed0" / "run.json").read_text())[0]
    folder = tmp_path / "easy" / "seed0"
    shutil.copytree(root / "exp" / "easy" / "seed0", folder)
    (folder / "run.json").unlink()
    early = tmp_path / "easy" / "seed1"
    shutil.copytree(root / "exp" / "easy" / "seed1", early)
    (early / "run.json").unlink()
    next(early.rglob("masks/final.json")).unlink()
    jobs = [lifting_suite.Job(f"easy seed {k}", [], f / "run.log", extra={"seed": k, "folder": f})
            for k, f in ((0, folder), (1, early))]
    for j in jobs:
        j.rc = -9
    lifting_suite.keep_stopped_liftings(jobs)
    assert not (early / "run.json").exists()
    kept = json.loads((folder / "run.json").read_text())[0]
    assert "rc -9" in kept["partial"] and kept["total_s"] is None
    assert kept["device"] == done["device"] == "cpu"                     # named by the run's log
    for key in ("iou_mean", "iou_worst", "iou_views", "rounds", "converged", "prompt_agreement", "rolled_back"):
        assert kept[key] == done[key], key
    assert [list(r) for r in kept["rounds_iou"]] == [list(r) for r in done["rounds_iou"]]
    s = summarize_scene({0: kept, 1: None})
    assert s["seeds_ok"] == 0 and s["partial_seeds"] == [0] and s["failed_seeds"] == [1]
    assert s["lifted"]["worst"] == pytest.approx(done["iou_mean"]) and s["chamfer"] is None
    assert table_row("easy", s).split("|")[2].strip() == "0/2 (+1 stopped after lifting)"
