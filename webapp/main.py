"""Command line of the web app: python app.py --data data/NAME [--conf ...] [--host ...] [--port ...]."""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # before gradio is imported: no telemetry
os.environ.setdefault("GRADIO_SERVER_NAME", "127.0.0.1")

from pathlib import Path  # noqa: E402

from systems.config import Conf  # noqa: E402
from webapp.runs import RunManager  # noqa: E402
from webapp.scene import SceneData, segmenter_from_conf  # noqa: E402
from webapp.ui import CSS, build_app, theme  # noqa: E402

DEFAULT_CONF = "confs/synthetic.conf"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="NTO3D web app: click the target in a view, run train.py, get the mesh")
    p.add_argument("--data", required=True, help="scene folder in the NeuS/DTU layout, e.g. data/occluded")
    p.add_argument("--conf", default=DEFAULT_CONF, help=f"conf for the run (default {DEFAULT_CONF})")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only; "
                   "from a laptop use ssh -L PORT:localhost:PORT gpu-box)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--view", type=int, default=None, help="view shown first (default: prompt.json's, else 0)")
    p.add_argument("--override", action="append", default=[], help="extra HOCON line(s) passed to train.py")
    p.add_argument("--device", default="cpu", help="device of the preview segmenter (SAM), e.g. cuda")
    return p.parse_args(argv)


def first_view(scene: SceneData, requested: int | None) -> int:
    if requested is not None:
        if not 0 <= requested < scene.n_views:
            raise SystemExit(f"--view {requested}: the scene has views 0..{scene.n_views - 1}")
        return requested
    try:
        return min(max(int(json.loads(scene.prompt_path.read_text())["view"]), 0), scene.n_views - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data).resolve()
    runs = RunManager(args.conf, data_dir, args.override)
    conf = Conf.from_file(args.conf, case=data_dir.name, overrides="\n".join(runs.overrides))
    scene = SceneData(data_dir, lambda: segmenter_from_conf(conf, data_dir, args.device),
                      conf.get("nto3d.prompt_file", str))

    demo = build_app(scene, runs, first_view(scene, args.view))
    print(f"[app] {scene.n_views} views of {data_dir}; runs go to {runs.exp_dir}")
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, share=False, ssr_mode=False, theme=theme(), css=CSS,
        allowed_paths=[str(data_dir), str(runs.exp_dir)], footer_links=[], quiet=False)
    return 0
