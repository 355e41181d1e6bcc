"""Gradio Space: clean vs adversarial predictions of self-supervised encoders on three tasks.

    python space/app.py [--host 127.0.0.1] [--port 7860] [--encoders DIR_OR_ID ...] [--heads_dir DIR]

A thin UI over `hf_ssl_robust.space_backend`, where the logic and every server-side limit live, and
`hf_ssl_robust.space_leaderboard` (the Leaderboard tab: `SPACE_LEADERBOARD_SOURCES`, filters, boards).
The same folder deploys as a Hugging Face Space (see README.md next to this file).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import gradio as gr
import matplotlib
import pandas as pd  # a gradio dependency
import torch

# Import pyplot once, here, in the main thread: gradio switches matplotlib's backend at the start of
# every request, and a first pyplot import racing in two worker threads fails with a "partially
# initialized module" error (seen when the first request came before anything had imported pyplot).
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401

from hf_ssl_robust.results import load_records, markdown_tables, plot_robustness_curves
from hf_ssl_robust.space_backend import (
    MAX_EPS_255,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    PALETTE,
    SpaceBackend,
    SpaceError,
    find_results,
    leaderboard,
    render_depth,
    render_losses,
)
from hf_ssl_robust.leaderboard import TEXT_COLUMNS
from hf_ssl_robust.space_leaderboard import ALL, SORT_KEYS, SUBMIT, LeaderboardView, board_heading, leaderboard_sources
from hf_ssl_robust.tasks import TASKS

log = logging.getLogger("hf_ssl_robust.space")
APP_DIR = Path(__file__).resolve().parent  # a built Space ships its leaderboard results in APP_DIR/leaderboard
ATTACK_LABELS = {"embed": "EmbedAttack (on the encoder)", "pgd": "PGD (on the classifier)",
                 "segpgd": "SegPGD (on the segmenter)", "depth_pgd": "DepthPGD (on the depth head)",
                 "apgd": "APGD (AutoAttack's step sizes, task loss)"}
# Small images (ShapesWorld is 64 px) are shown enlarged, pixel for pixel.
CSS = """
#input_image img, #adv_image img, #perturbation img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
"""
INTRO = """# Adversarial robustness of self-supervised encoders
Pick an encoder, a task and an attack; the image is perturbed by at most ε per pixel (L∞) and the
clean and adversarial predictions are shown side by side. Heads are linear probes trained on
ShapesWorld (synthetic scenes); the task attack and APGD push the prediction away from the clean one
(no labels needed; for ShapesWorld examples the numbers also compare with the ground truth). Built on `hf_ssl_robust`, the benchmark of *Benchmarking Robust Self-Supervised Learning Across
Diverse Downstream Tasks*; the Results tab shows its tables, the Leaderboard tab ranks encoders across shared runs."""


def safe_image(**kwargs) -> gr.Image:
    """`gr.Image` that turns an unreadable upload into a clear message instead of a stack trace.

    (Wrapping the instance's `preprocess`: subclassing a component makes gradio write a .pyi file.)
    """
    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Exception as err:  # noqa: BLE001 - any decoding failure is the visitor's file
            name = getattr(payload, "orig_name", None) or "the upload"
            raise gr.Error(f"{name!r} is not an image this app can read ({type(err).__name__}). "
                           "Upload a PNG, JPEG, WebP, BMP, GIF or TIFF file.", title="Not an image",
                           print_exception=False) from None

    component.preprocess = checked
    return component


def _attack_choices(task: str) -> list[tuple[str, str]]:
    # Values stay `embed` / `task` / `apgd` for every task (the server checks radio values against
    # the choices it was built with); the backend maps `task` to PGD, SegPGD or DepthPGD.
    return [(ATTACK_LABELS["embed"], "embed"), (ATTACK_LABELS[TASKS[task].task_attack], "task"), (ATTACK_LABELS["apgd"], "apgd")]


def build_demo(backend: SpaceBackend, results: list[str] = (), concurrency: int = 1,
               leaderboard_view: LeaderboardView | None = None) -> gr.Blocks:
    """The three tabs: the attack playground, the benchmark results and the leaderboard
    (default: `SPACE_LEADERBOARD_SOURCES`, else the results shipped with the app or committed in docs/)."""
    examples = backend.prepare_examples()
    choices = backend.encoder_choices()

    def run(encoder, task, attack, eps_255, steps, size, image, progress=gr.Progress()):
        try:
            out = backend.run(encoder, task, attack, eps_255, steps, image, size=size,
                              progress=lambda f, s: progress(f, desc=s))
        except SpaceError as err:
            raise gr.Error(str(err), title="Cannot run this attack", print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - log it here, show one line there
            log.exception("attack failed")
            raise gr.Error(f"Unexpected error ({type(err).__name__}): {err}", title="Attack failed",
                           print_exception=False) from None
        for note in out.notes:
            (gr.Warning if "downscaled" in note or "upscaled" in note else gr.Info)(note)
        m = out.metrics
        status = f"{m['encoder']} · {task} · {ATTACK_LABELS[out.attack]} · ε = {m['eps']} · {m['steps']} steps · {m['image_size']} px · {m['seconds']} s"
        if out.notes:
            status += "\nNotes: " + "; ".join(out.notes)
        cls_c = cls_a = seg_c = seg_a = depth = None
        if task == "classification":
            cls_c, cls_a = out.clean_probs, out.adv_probs
        elif task == "segmentation":
            seg_c = _annotated(out.clean_image, out.clean_mask, out.class_names)
            seg_a = _annotated(out.adv_image, out.adv_mask, out.class_names)
        else:
            depth = render_depth([out.clean_depth, out.adv_depth], ["clean", "adversarial"])
        return (status, cls_c, cls_a, seg_c, seg_a, depth, out.adv_image, out.perturbation, m,
                render_losses(out.losses, out.attack))

    def on_task(task):
        return (gr.update(choices=_attack_choices(task)),
                gr.update(visible=task == "classification"), gr.update(visible=task == "segmentation"),
                gr.update(visible=task == "depth"))

    def show_results(path, upload):
        path = upload or path
        if not path:
            return "No results.json found under outputs/: run `hf-ssl-robust benchmark` or upload one.", None, "", None
        if not upload and path not in find_results(extra=results):
            raise gr.Error("Pick a results file from the list.")
        try:
            records = load_records(path)
        except Exception as err:  # noqa: BLE001 - any broken upload
            raise gr.Error(f"{Path(path).name!r} is not a results.json written by hf-ssl-robust ({type(err).__name__}: {err}).",
                           print_exception=False) from None
        headers, rows = leaderboard(records)
        plot_path = Path(backend.cache_dir) / "plots" / f"curves_{abs(hash(str(path))) % 10**8}.png"
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        plotted = plot_robustness_curves(records, plot_path)
        encoders = sorted({r["encoder"] for r in records})
        summary = f"**{Path(path).name}** · {len(records)} records · encoders: {', '.join(encoders)}"
        return summary, pd.DataFrame(rows, columns=headers), markdown_tables(records), str(plotted) if plotted else None

    with gr.Blocks(title="SSL robustness") as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Attack"):
            with gr.Row():
                with gr.Column(scale=2, min_width=300):
                    image = safe_image(label="Image (upload, paste, or pick an example below)", type="pil", image_mode=None, elem_id="input_image",
                                      sources=["upload", "clipboard"], format="png", height=260)
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Examples: ShapesWorld scenes and photos",
                                examples_per_page=12, elem_id="examples")
                    encoder = gr.Dropdown(choices=choices, value=choices[0] if choices else None, allow_custom_value=True,
                                          label="Encoder", info="bundled, or type a Hub id such as facebook/dinov2-small (needs network)")
                    task = gr.Radio(list(TASKS), value="classification", label="Task")
                    attack = gr.Radio(_attack_choices("classification"), value="task", label="Attack")
                    with gr.Row():
                        eps = gr.Slider(0, MAX_EPS_255, value=8, step=1, label="ε (× 1/255)")
                        steps = gr.Slider(1, MAX_STEPS, value=10, step=1, label="Steps")
                    size = gr.Slider(MIN_SIDE, MAX_SIDE, value=128, step=16, label="Working size (long side, px)",
                                     info="larger images are downscaled to this")
                    button = gr.Button("Attack", variant="primary", elem_id="run")
                with gr.Column(scale=3, min_width=400):
                    status = gr.Textbox(label="Status", lines=2, interactive=False, elem_id="status")
                    with gr.Row(visible=True) as cls_row:
                        cls_clean = gr.Label(num_top_classes=5, label="Clean prediction (top 5)", elem_id="clean_pred")
                        cls_adv = gr.Label(num_top_classes=5, label="Adversarial prediction (top 5)", elem_id="adv_pred")
                    with gr.Row(visible=False) as seg_row:
                        cmap = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(backend_class_names("segmentation"))}
                        seg_clean = gr.AnnotatedImage(label="Clean segmentation", color_map=cmap, format="png", elem_id="clean_seg")
                        seg_adv = gr.AnnotatedImage(label="Adversarial segmentation", color_map=cmap, format="png", elem_id="adv_seg")
                    with gr.Row(visible=False) as depth_row:
                        depth = gr.Image(label="Depth: clean | adversarial (shared scale, metres)", format="png", elem_id="depth")
                    with gr.Row():
                        adv_image = gr.Image(label="Adversarial image", format="png", elem_id="adv_image", height=240)
                        perturbation = gr.Image(label="Perturbation (amplified to the full range)", format="png",
                                                elem_id="perturbation", height=240)
                    with gr.Row():
                        metrics = gr.JSON(label="Numbers", elem_id="metrics", open=True, max_height=380)
                        losses = gr.Image(label="Attack loss per step", format="png", elem_id="losses")
            task.change(on_task, task, [attack, cls_row, seg_row, depth_row], api_visibility="private")
            button.click(run, [encoder, task, attack, eps, steps, size, image],
                         [status, cls_clean, cls_adv, seg_clean, seg_adv, depth, adv_image, perturbation, metrics, losses],
                         api_name="attack", concurrency_limit=concurrency, concurrency_id="attack", time_limit=600)
        with gr.Tab("Results"):
            gr.Markdown("Benchmark runs (`results.json` from `hf-ssl-robust benchmark`): the paper's tables, "
                        "robustness curves and a leaderboard (clean vs worst attack at the largest ε). A ⚠ after a "
                        "number is an automatic warning that it may overstate robustness; the legend under the tables "
                        "says what each means and what to do.")
            found = find_results(extra=results)
            with gr.Row():
                picked = gr.Dropdown(found, value=found[0] if found else None, label="Runs found under outputs/", scale=3)
                refresh = gr.Button("Refresh list", scale=1)
                upload = gr.File(label="…or upload a results.json", file_types=[".json"], type="filepath", scale=2)
            summary = gr.Markdown(elem_id="results_summary")
            board = gr.Dataframe(label="Leaderboard", interactive=False, elem_id="leaderboard")
            tables = gr.Markdown(elem_id="results_tables")
            curves = gr.Image(label="Robustness vs ε", format="png", elem_id="curves")
            outs = [summary, board, tables, curves]
            picked.change(show_results, [picked, upload], outs, api_name="results")
            upload.change(show_results, [picked, upload], outs, api_visibility="private")
            refresh.click(lambda: gr.update(choices=find_results(extra=results)), None, picked, api_visibility="private")
            demo.load(show_results, [picked, upload], outs, api_visibility="private")
        with gr.Tab("Leaderboard"):
            view = leaderboard_view or LeaderboardView.from_sources(leaderboard_sources(APP_DIR))
            gr.Markdown(view.summary(), elem_id="lb_summary")
            choices = view.choices()
            with gr.Row():
                lb_filters = [gr.Dropdown(choices[key], value=ALL, label=label, elem_id=f"lb_{key}", scale=2)
                              for key, label in (("task", "Task"), ("dataset", "Dataset"), ("threat", "Threat model"),
                                                 ("family", "Encoder family"))]  # fmt: skip
                lb_sort = gr.Dropdown(list(SORT_KEYS), value="rank", label="Sort by", elem_id="lb_sort", scale=1,
                                      info="or click a column header")
                lb_desc = gr.Checkbox(False, label="Descending", elem_id="lb_desc", scale=1)
            lb_inputs = [*lb_filters, lb_sort, lb_desc]

            @gr.render(inputs=lb_inputs)
            def show_boards(task, dataset, threat, family, sort_by, descending):
                tables = view.tables(task, dataset, threat, family, sort_by, descending)
                if not tables:
                    gr.Markdown("No board matches these filters.", elem_classes=["lb-board"])
                for board, headers, rows in tables:
                    gr.Markdown(board_heading(board), elem_classes=["lb-board"])
                    card = headers.index("card")
                    rows = [[*row[:card], f"[card]({row[card]})" if str(row[card]).startswith("http") else row[card], *row[card + 1:]]
                            for row in rows]  # Hub cards as links; bundled and local ones as their path
                    gr.Dataframe(pd.DataFrame(rows, columns=headers), interactive=False, elem_classes=["lb-table"],
                                 datatype=["markdown" if h == "card" else "str" if h in TEXT_COLUMNS else "number" for h in headers])

            def boards_api(task, dataset, threat, family, sort_by, descending):
                try:
                    return view.as_json(task, dataset, threat, family, sort_by, descending)
                except ValueError as err:
                    raise gr.Error(str(err), print_exception=False) from None

            lb_json = gr.JSON(visible=False)
            gr.on([c.change for c in lb_inputs], boards_api, lb_inputs, lb_json, api_name="leaderboard")
            gr.Markdown(SUBMIT, elem_id="lb_submit")
    return demo


def backend_class_names(task: str) -> list[str]:
    from hf_ssl_robust.data import get_dataset_spec

    return list(get_dataset_spec("shapes", task=task).class_names)


def _annotated(image, mask, names):
    return image, [(mask == k, name) for k, name in enumerate(names) if (mask == k).any()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--encoders", nargs="*", default=[], help="extra encoders offered (folders or Hub ids)")
    p.add_argument("--heads_dir", default=None, help="trained heads <encoder>-shapes-<task> (default: outputs/benchmark/heads)")
    p.add_argument("--cache_dir", default=None, help="heads the app trains and example images (default ~/.cache/hf_ssl_robust/space)")
    p.add_argument("--results", nargs="*", default=[], help="results.json files for the Results tab (besides outputs/**)")
    p.add_argument("--leaderboard_sources", nargs="*", default=None,
                   help="run folders, results datasets or Hub dataset ids for the Leaderboard tab (default: $SPACE_LEADERBOARD_SOURCES, "
                        "else the results shipped with the app or committed in docs/)")
    p.add_argument("--no_hub", action="store_true", help="visitors may not type Hub ids")
    p.add_argument("--train_samples", type=int, default=512, help="ShapesWorld images for a head the app trains")
    p.add_argument("--train_epochs", type=int, default=None, help="epochs for such a head (default: per task)")
    p.add_argument("--concurrency", type=int, default=1, help="attacks run at the same time")
    p.add_argument("--max_queue", type=int, default=16, help="requests waiting at most")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--mixed_precision", choices=("no", "bf16"), default=os.environ.get("ACCELERATE_MIXED_PRECISION", "no"),
                   help="autocast for attacks and forwards (the pixel layer stays fp32); default: $ACCELERATE_MIXED_PRECISION, else no")
    return p.parse_args(argv)


def make_demo(args) -> tuple[gr.Blocks, dict]:
    """The queued demo and the keyword arguments of its `launch`."""
    torch.set_num_threads(args.threads)
    backend = SpaceBackend(encoders=args.encoders, heads_dir=args.heads_dir, cache_dir=args.cache_dir,
                           allow_hub=not args.no_hub, train_samples=args.train_samples,
                           train_epochs=args.train_epochs, mixed_precision=args.mixed_precision)
    sources = args.leaderboard_sources if args.leaderboard_sources else leaderboard_sources(APP_DIR)
    demo = build_demo(backend, results=args.results, concurrency=args.concurrency,
                      leaderboard_view=LeaderboardView.from_sources(sources))
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.max_queue)
    launch = dict(server_name=args.host, server_port=args.port, max_file_size="25mb", show_error=True,
                  allowed_paths=[str(backend.cache_dir)], css=CSS)
    return demo, launch


def main(argv=None):
    logging.basicConfig(level=logging.INFO)
    demo, launch = make_demo(parse_args(argv))
    demo.launch(**launch)


if __name__ == "__main__":
    main()
