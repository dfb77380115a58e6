"""The page (gradio Blocks): views, clicks and the preview mask on the left; the run on the right.

Element ids (used by tests/test_webapp_browser.py): prompt_image, click_mode, undo, clear, box_text,
set_box, prompt_info, views, start, start_message, run_status, run_error, loss_plot,
contact_sheet, mesh_view, downloads.
"""
from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from sam_utils.errors import PromptError, SegmenterError
from webapp.runs import RunManager, done_text
from webapp.scene import PromptState, SceneData

POLL_S = 1.0
MODES = ["positive", "negative", "box"]
CSS = "#prompt_image img {cursor: crosshair} #run_status {min-height: 4em}"


def theme():
    """The default look with the system's fonts: the page requests nothing from the internet."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def _fmt_point(p) -> str:
    return f"({p[0]:.0f}, {p[1]:.0f})"


def build_app(scene: SceneData, runs: RunManager, initial_view: int = 0) -> gr.Blocks:
    def show(state: PromptState, note: str = ""):
        t0 = time.time()
        try:
            img, mask = scene.render(state)
        except (PromptError, SegmenterError, OSError) as e:   # a bad prompt, a missing checkpoint
            img, mask, note = scene.shown(state.view)[0], None, f"**{type(e).__name__}**: {e}"
        dt = time.time() - t0
        pos = [p for p, lab in zip(state.points, state.labels) if lab == 1]
        neg = [p for p, lab in zip(state.points, state.labels) if lab == 0]
        parts = [f"view **{state.view}**", f"positive: {', '.join(map(_fmt_point, pos)) or '-'}",
                 f"negative: {', '.join(map(_fmt_point, neg)) or '-'}",
                 "box: " + (", ".join(f"{v:.0f}" for v in state.box) if state.box else "-")]
        if state.corner is not None:
            parts.append(f"box corner {_fmt_point(state.corner)}: click the opposite corner")
        if mask is not None:
            parts.append(f"mask: {int(mask.sum())} px ({dt:.2f} s, {scene.segmenter().name})")
        elif not state.usable():
            parts.append("click a positive point on the target (or give a box)")
        return img, " · ".join(parts) + (f"\n\n{note}" if note else ""), state

    def on_click(state: PromptState, mode: str, evt: gr.SelectData):
        x, y = evt.index[0], evt.index[1]
        _, s = scene.shown(state.view)
        state.click((x + 0.5) / s - 0.5, (y + 0.5) / s - 0.5, mode)   # display -> full-resolution pixels
        return show(state)

    def on_view(state: PromptState, evt: gr.SelectData):
        state.select_view(int(evt.index))
        return show(state)

    def on_undo(state: PromptState):
        state.undo()
        return show(state)

    def on_clear(state: PromptState):
        state.clear()
        return show(state)

    def on_set_box(state: PromptState, text: str):
        text = (text or "").strip()
        if not text:
            state.set_box(None)
            return show(state)
        try:
            box = [float(v) for v in text.replace(";", ",").split(",")]
            if len(box) != 4:
                raise ValueError
        except ValueError:
            return show(state, f"box {text!r}: give four numbers x0,y0,x1,y1 in full-resolution pixels")
        state.set_box([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])
        return show(state)

    def on_start(state: PromptState):
        if runs.running():
            return runs.start()                       # the refusal message
        if not state.usable():
            return "click at least one positive point on the target (or give a box) first"
        try:
            path = scene.write_prompt(state)
        except PromptError as e:
            return f"**PromptError**: {e}"
        return f"prompt written to `{path}`; " + runs.start()

    def on_tick(shown: dict):
        st = runs.status()
        status = st["status"]
        lines = [f"**{status}**"]
        if status != "idle":
            it, until = st.get("iteration", 0), st.get("until", 0)
            lines.append(f"stage: **{st.get('stage') or '-'}** · iteration {it}" + (f" / {until}" if until else ""))
            if st.get("round") is not None:
                acc = st.get("n_accepted")
                lines.append(f"lifting round {st['round']} · accepted views {acc if acc is not None else '-'}"
                             f" / {st.get('n_views') or scene.n_views}")
        else:
            lines.append(st.get("message", ""))
        out = {"status": "\n\n".join(lines)}
        err = ""
        if status == "error":
            err = f"{st.get('error')}\n\n--- train.py output (last lines) ---\n{st.get('log_tail', '')}"
        out["error"] = gr.update(value=err, visible=bool(err)) if err != shown.get("error") else gr.skip()
        loss = st.get("loss") or []
        out["loss"] = (pd.DataFrame(loss, columns=["iteration", "loss"]) if len(loss) != shown.get("n_loss") and loss
                       else gr.skip())
        sheet = st.get("contact_sheet")
        sheet_path = str(runs.exp_dir / sheet) if sheet else None
        out["sheet"] = sheet_path if sheet_path != shown.get("sheet") else gr.skip()
        was_done = bool(shown.get("done")) and status == "done"      # a new run clears the last one's mesh
        dl = runs.downloads() if status == "done" and not was_done else None
        if dl:
            out["model"], out["files"] = dl["preview"], dl["files"]
            out["status"] += "\n\n" + done_text(dl)
        elif was_done:
            out["model"], out["files"], out["status"] = gr.skip(), gr.skip(), shown["status_text"]
        else:
            cleared = shown.get("done")
            out["model"], out["files"] = (None, None) if cleared else (gr.skip(), gr.skip())
        # the start message ("started ...", "already in progress") is stale once the run has ended
        start_msg = "" if status != "running" and shown.get("running") else gr.skip()
        shown = {"error": err, "n_loss": len(loss), "sheet": sheet_path, "done": was_done or bool(dl),
                 "status_text": out["status"], "running": status == "running"}
        return (out["status"], out["error"], out["loss"], out["sheet"], out["model"], out["files"], start_msg,
                shown)

    first = PromptState(view=initial_view)
    img0, info0, _ = show(first)
    with gr.Blocks(title="NTO3D: click the target") as demo:
        state = gr.State(first)
        shown = gr.State({})
        gr.Markdown(f"## NTO3D · `{scene.data_dir}` · {scene.n_views} views\nPick a view, click the target "
                    "(positive), the background (negative) or two box corners; **Start** writes the prompt to "
                    f"`{scene.prompt_path.name}` and runs `train.py`.")
        with gr.Row():
            with gr.Column(scale=3):
                image = gr.Image(value=img0, label="click on the target", interactive=False, format="png",
                                 elem_id="prompt_image", buttons=[], show_label=True)
                with gr.Row():
                    mode = gr.Radio(MODES, value="positive", label="a click adds", elem_id="click_mode")
                    undo = gr.Button("Undo", elem_id="undo", size="sm")
                    clear = gr.Button("Clear", elem_id="clear", size="sm")
                with gr.Row():
                    box_text = gr.Textbox(label="or enter a box: x0, y0, x1, y1 (full-resolution pixels)",
                                          elem_id="box_text", scale=3)
                    set_box = gr.Button("Set box", elem_id="set_box", size="sm", scale=1)
                info = gr.Markdown(info0, elem_id="prompt_info")
                gallery = gr.Gallery(value=scene.thumbnails(), label="views", columns=8, height=200,
                                     allow_preview=False, elem_id="views", format="png", buttons=[])
            with gr.Column(scale=2):
                start = gr.Button("Start reconstruction", variant="primary", elem_id="start")
                start_msg = gr.Markdown(elem_id="start_message")
                status = gr.Markdown("**idle**", elem_id="run_status")
                error = gr.Textbox(label="error", visible=False, lines=12, elem_id="run_error", interactive=False)
                loss = gr.LinePlot(x="iteration", y="loss", title="training loss", height=220, elem_id="loss_plot")
                sheet = gr.Image(label="latest lifting round (green: accepted)", interactive=False,
                                 elem_id="contact_sheet", buttons=[], format="png")
                model = gr.Model3D(label="target mesh (orange: cameras)", elem_id="mesh_view", height=360)
                files = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="downloads")
        view_outputs = [image, info, state]
        image.select(on_click, [state, mode], view_outputs)
        gallery.select(on_view, [state], view_outputs)
        undo.click(on_undo, [state], view_outputs)
        clear.click(on_clear, [state], view_outputs)
        set_box.click(on_set_box, [state, box_text], view_outputs)
        start.click(on_start, [state], [start_msg])
        timer = gr.Timer(POLL_S)
        # a poll is no user action: no loading overlay (its timer text would cover the status)
        timer.tick(on_tick, [shown], [status, error, loss, sheet, model, files, start_msg, shown], show_progress="hidden")
    return demo
