"""A run's report: one self-contained exp/.../report.html (every image embedded as base64).

Contents, each when the run has the data: the prompt drawn on its view with its mask (round 0),
per-round plots (IoU with ground truth, agreement with the projection, accepted views), the stage
timings, the loss curve (progress.json), the per-round contact sheets, renders of the final mesh
(meshes/target.ply, else scene.ply) from a few of the scene's cameras beside the photos
(evaluation/mesh_render.py, CPU), the target mesh's silhouette check where the run kept one (against the
masks its conf names, nto3d.gt_mask_dir), and the Chamfer metrics (meshes/*.json). Images have ids
(`img-prompt`, `img-iou`, ...), so tests and scripts can find them.

    python -m evaluation.report exp/<case>/<conf> [--data data/<case>]
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import trimesh

from datasets.dtu import IMAGE_EXTS
from evaluation import report_plots as plots
from evaluation.mesh_render import camera_from_world_mat, render_mesh, scaled_intrinsics
from evaluation.silhouette import read_check
from sam_utils.lifting import load_final, load_rounds
from systems.config import Conf

REPORT_NAME = "report.html"
JPEG_QUALITY = 85
RENDER_WIDTH = 320           # pixels: renders are made at this width, then cropped to the mesh
N_RENDERS = 4
CROP_MARGIN = 0.12           # fraction of the mesh's pixel bbox added on each side of a render crop
TILE_HEIGHT = 220
PROMPT_MAX_SIDE = 640         # the prompt view is shown with its longest side in [MIN, MAX]
PROMPT_MIN_SIDE = 400
POS_RGB, NEG_RGB, BOX_RGB, MASK_RGB = (40, 220, 60), (230, 40, 40), (255, 210, 0), (30, 144, 255)


# ------------------------------------------------------------------ encoding
def _data_uri(img: np.ndarray | bytes, fmt: str = "png") -> str:
    """RGB uint8 (H,W,3) array (encoded as fmt) or PNG bytes -> data: URI."""
    if isinstance(img, np.ndarray):
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if fmt == "jpeg" else []
        ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise ValueError(f"could not encode a {img.shape} image as {fmt}")
        img = buf.tobytes()
    return f"data:image/{fmt};base64,{base64.b64encode(img).decode('ascii')}"


def _img(img, ident: str, caption: str, fmt: str = "png") -> str:
    return (f'<figure><img id="{ident}" src="{_data_uri(img, fmt)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _read_rgb(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _images(data_dir: Path | None) -> list[Path]:
    folder = None if data_dir is None else data_dir / "image"
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


# ------------------------------------------------------------------ sections
def draw_prompt(image: np.ndarray, mask: np.ndarray | None, prompt: dict) -> np.ndarray:
    """The prompt (points, box) and its mask on the image; prompt coordinates are in `image`'s pixels."""
    out = image.astype(np.float32)
    if mask is not None:
        m = mask.astype(bool)
        out[m] = 0.55 * out[m] + 0.45 * np.asarray(MASK_RGB, np.float32)
    out = out.astype(np.uint8)
    if mask is not None:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, MASK_RGB, max(1, image.shape[1] // 300))
    r = max(3, image.shape[1] // 80)
    if prompt.get("box") is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in prompt["box"])
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_RGB, max(1, r // 2))
    for pts, colour in ((prompt.get("positive") or [], POS_RGB), (prompt.get("negative") or [], NEG_RGB)):
        for x, y in pts:
            cv2.circle(out, (int(round(x)), int(round(y))), r, colour, -1)
            cv2.circle(out, (int(round(x)), int(round(y))), r, (255, 255, 255), 1)
    return out


def prompt_view_image(round0: tuple[Path, dict], images: list[Path]) -> np.ndarray | None:
    """Round 0's prompt and mask drawn on its view (at the run's working resolution)."""
    folder, rep = round0
    prompt = rep.get("prompt")
    if not prompt or prompt.get("view") is None or prompt["view"] >= len(images):
        return None
    view = int(prompt["view"])
    image = _read_rgb(images[view])
    mask = cv2.imread(str(folder / f"{view:03d}.png"), cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    if mask is not None and mask.shape != image.shape[:2]:      # the run worked on downscaled images
        image = cv2.resize(image, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_AREA)
    longest = max(image.shape[:2])
    s = PROMPT_MIN_SIDE / longest if longest < PROMPT_MIN_SIDE else min(1.0, PROMPT_MAX_SIDE / longest)
    size = (round(image.shape[1] * s), round(image.shape[0] * s))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_NEAREST)
    if mask is not None:
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)

    def sc(a):
        return None if a is None else ((np.asarray(a, float) + 0.5) * s - 0.5).tolist()
    shown = {"positive": sc(prompt.get("positive") or []), "negative": sc(prompt.get("negative") or []),
             "box": sc(prompt.get("box"))}
    return draw_prompt(image, None if mask is None else mask > 127, shown)


def mesh_views(mesh: trimesh.Trimesh, data_dir: Path, images: list[Path], n: int = N_RENDERS,
               width: int = RENDER_WIDTH, first: int = 0) -> list[tuple[int, np.ndarray]]:
    """(view, photo crop | render crop) for n views spread over the scene's cameras, `first` first."""
    cams = data_dir / "cameras_sphere.npz"
    if len(mesh.faces) == 0 or not cams.is_file() or not images:
        return []
    npz = np.load(cams)
    n_views = len(images)
    picks = [(first + round(i * n_views / n)) % n_views for i in range(min(n, n_views))]
    out = []
    for v in dict.fromkeys(picks):
        photo = _read_rgb(images[v])
        if photo is None or f"world_mat_{v}" not in npz:
            continue
        K, R, t = camera_from_world_mat(npz[f"world_mat_{v}"])
        s = width / photo.shape[1]
        h = max(1, round(photo.shape[0] * s))
        rgb, mask = render_mesh(mesh, scaled_intrinsics(K, s), R, t, h, width)
        if not mask.any():
            continue
        rows, cols = np.nonzero(mask)
        m = CROP_MARGIN * max(np.ptp(rows) + 1, np.ptp(cols) + 1)
        y0, y1 = int(max(0, rows.min() - m)), int(min(h, rows.max() + m + 1))
        x0, x1 = int(max(0, cols.min() - m)), int(min(width, cols.max() + m + 1))
        small = cv2.resize(photo, (width, h), interpolation=cv2.INTER_AREA)
        pair = np.concatenate([small[y0:y1, x0:x1], rgb[y0:y1, x0:x1]], axis=1)
        scale = TILE_HEIGHT / pair.shape[0]
        out.append((v, cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)))
    return out


def mesh_metrics(exp_dir: Path) -> list[dict]:
    """The newest Chamfer result of each mesh kind (meshes/<which>_<iter>.json)."""
    newest: dict[str, tuple[int, dict]] = {}
    for path in (exp_dir / "meshes").glob("*.json"):
        m = re.fullmatch(r"(.+?)_(\d+)", path.stem)
        which, it = (m.group(1), int(m.group(2))) if m else (path.stem, -1)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if which not in newest or it > newest[which][0]:
            newest[which] = (it, data)
    return [{"mesh": k, "iteration": it, **d} for k, (it, d) in sorted(newest.items())]


def _table(rows: list[dict], keys: list[str]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape("" if v is None else str(v))


def _data_dir_from_conf(exp_dir: Path) -> Path | None:
    try:
        return Path(Conf.from_file(exp_dir / "config.conf").get("dataset.data_dir", str))
    except Exception:  # noqa: BLE001 - no conf or no key: the report goes without the photos
        return None


def silhouette_section(mesh_path: Path) -> str | None:
    """The mesh's silhouette check where the run kept one (evaluation.silhouette.read_check: the target mesh
    against the conf's masks): mean and worst IoU and the sheet of where they differ; else None."""
    res = read_check(mesh_path)
    if res is None or not res["per_view"]:
        return None
    sheet = _read_rgb(res["sheet"])
    return (f"<h2>Silhouette check: {html.escape(mesh_path.name)} against {html.escape(str(res['mask_dir']))}/"
            f"</h2><p>mean IoU {res['mean']:.4f} over {len(res['per_view'])} views; worst view {res['worst_view']}: "
            f"{res['worst']:.4f}</p>" + ("" if sheet is None else _img(
                sheet, "img-silhouette", "green: mesh and mask agree, red: mesh only, blue: mask only", "jpeg")))


# ------------------------------------------------------------------ the page
CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
figure{display:inline-block;margin:.4em;vertical-align:top}figcaption{font-size:.85em;color:#555}
img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}.note{color:#777}
.warn{color:#8a4b00;background:#fff4e0;padding:.5em 1.8em}"""


def write_report(exp_dir, data_dir=None, out=None, n_renders: int = N_RENDERS,
                 render_width: int = RENDER_WIDTH) -> Path:
    """Write <exp_dir>/report.html (or `out`) for the run in exp_dir; returns its path.

    data_dir: the scene folder (image/, cameras_sphere.npz); default: dataset.data_dir from the
    run's config.conf. Without it the report has no prompt view and no mesh renders.
    """
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"write_report: run folder {exp_dir} not found; pass the exp/<case>/<conf> folder")
    data_dir = Path(data_dir) if data_dir is not None else _data_dir_from_conf(exp_dir)
    images = _images(data_dir)
    rounds = load_rounds(exp_dir)
    reports = [r for _, r in rounds]
    sections = [f"<h1>NTO3D run report</h1><p>run: <code>{html.escape(str(exp_dir))}</code>"
                f" &middot; scene: <code>{html.escape(str(data_dir))}</code> &middot; {len(images)} views</p>"]

    final = load_final(exp_dir) or {}
    if final.get("warnings"):
        sections.append('<h2>Warnings</h2><ul class="warn">' + "".join(f"<li>{html.escape(w)}</li>"
                                                                       for w in final["warnings"]) + "</ul>")
    summary = _summary(reports, final, exp_dir)
    if summary:
        sections.append("<h2>Summary</h2>" + _table([summary], list(summary)))
    if rounds and "prompt" in rounds[0][1]:
        img = prompt_view_image(rounds[0], images)
        sections.append("<h2>Prompt</h2>" + (_img(img, "img-prompt", f"prompt on view {rounds[0][1]['prompt']['view']}"
                                                                 " (green: positive, red: negative, yellow: box; blue: mask)")
                                             if img is not None else '<p class="note">scene images not found</p>'))
    timings = _read_json(exp_dir / "timings.json") or {}
    progress = _read_json(exp_dir / "progress.json") or {}
    figs = [("img-iou", plots.iou_plot(reports), "IoU of the lifted masks with the ground truth"),
            ("img-agreement", plots.agreement_plot(reports), "IoU of each answer with the projection"),
            ("img-accepted", plots.accepted_plot(reports, len(images) or None), "accepted views per round"),
            ("img-timings", plots.timings_plot(timings), "stage timings"),
            ("img-loss", plots.loss_plot(progress.get("loss") or []), "training loss")]
    figs = [f for f in figs if f[1] is not None]
    if figs:
        sections.append("<h2>Plots</h2>" + "".join(_img(png, ident, cap) for ident, png, cap in figs))
    sheets = [(folder, rep) for folder, rep in rounds if (folder / "contact_sheet.png").is_file()]
    if sheets:
        parts = []
        for i, (folder, rep) in enumerate(sheets):
            img = _read_rgb(folder / "contact_sheet.png")
            if img is None:
                continue
            label = f"round {rep.get('round', folder.name)}" + (f": {rep['n_accepted']} accepted" if "n_accepted" in rep else "")
            opened = " open" if i == len(sheets) - 1 else ""
            parts.append(f"<details{opened}><summary>{html.escape(label)}</summary>"
                         f"{_img(img, f'img-sheet-{i:02d}', label + ' (green: accepted, orange: projection only)', 'jpeg')}</details>")
        sections.append("<h2>Masks per round</h2>" + "".join(parts))
    mesh_path = next((p for p in (exp_dir / "meshes" / "target.ply", exp_dir / "meshes" / "scene.ply") if p.is_file()), None)
    if mesh_path is not None and data_dir is not None:
        mesh = trimesh.load(mesh_path, force="mesh", process=False)
        first = int(rounds[0][1]["prompt"]["view"]) if rounds and "prompt" in rounds[0][1] else 0
        views = mesh_views(mesh, data_dir, images, n_renders, render_width, first)
        body = "".join(_img(img, f"img-render-{i}", f"view {v}: photo | {mesh_path.name}", "jpeg")
                       for i, (v, img) in enumerate(views))
        sections.append(f"<h2>Mesh: {html.escape(mesh_path.name)}</h2><p>{len(mesh.vertices)} vertices, "
                        f"{len(mesh.faces)} faces (world units)</p>" + (body or '<p class="note">empty mesh</p>'))
    silhouette = silhouette_section(exp_dir / "meshes" / "target.ply")
    if silhouette:
        sections.append(silhouette)
    metrics = mesh_metrics(exp_dir)
    if metrics:
        keys = ["mesh", "iteration"] + [k for k in ("accuracy", "completeness", "overall") if k in metrics[0]]
        sections.append("<h2>Chamfer (world units)</h2>" + _table(metrics, keys))
    conf = exp_dir / "config.conf"
    if conf.is_file():
        sections.append(f"<h2>Configuration</h2><details><summary>config.conf</summary><pre>"
                        f"{html.escape(conf.read_text())}</pre></details>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>NTO3D report: {html.escape(exp_dir.name)}"
            f"</title><style>{CSS}</style></head><body>{''.join(sections)}</body></html>")
    out = Path(out) if out is not None else exp_dir / REPORT_NAME
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(page)
    os.replace(tmp, out)
    print(f"[report] {out}")
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _summary(reports: list[dict], final: dict, exp_dir: Path) -> dict:
    """The lifting's rounds and its final masks (masks/final.json: prompt-view agreement, IoU with ground
    truth, the round rolled back to, the support plane), the run's seconds."""
    lifting = [r for r in reports if "views" in r]
    out: dict = {}
    if lifting:
        last = lifting[-1]
        out.update(rounds=len(lifting), converged=last.get("converged"), accepted=last.get("n_accepted"))
        if "iou_gt_mean" in last:
            out.update(iou_gt_mean=last["iou_gt_mean"], iou_gt_worst=last["iou_gt_worst"])
    if "prompt_agreement" in final:
        out["prompt_agreement"] = final["prompt_agreement"]
    if "iou_gt_mean" in final:       # the lifted masks the target stage trains on
        out.update(iou_gt_mean=final["iou_gt_mean"], iou_gt_worst=final["iou_gt_worst"])
    if final.get("rolled_back"):
        out["rolled_back_to_round"] = final["rolled_back"]["to_round"]
    if "support_plane" in final:     # where the target's mesh ends below (world units), or that it is not cut
        plane = final["support_plane"]
        why = f" ({final['support_why']})" if final.get("support_why") and plane is None else ""
        out["support_plane"] = f"none found{why} (mesh not cut below)" if plane is None else \
            f"n = ({plane[0]:.3f}, {plane[1]:.3f}, {plane[2]:.3f}), d = {plane[3]:.2f}"
    timings = _read_json(exp_dir / "timings.json")
    if timings:
        out["seconds"] = float(sum(v for v in timings.values() if isinstance(v, (int, float))))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write report.html for a finished run")
    p.add_argument("exp_dir", help="the run folder, exp/<case>/<conf>")
    p.add_argument("--data", default=None, help="the scene folder (default: dataset.data_dir of its config.conf)")
    p.add_argument("--out", default=None, help="output file (default: <exp_dir>/report.html)")
    a = p.parse_args(argv)
    write_report(a.exp_dir, a.data, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
