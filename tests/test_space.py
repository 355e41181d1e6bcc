"""The Gradio Space: its backend directly, and the app through `gradio_client` on a local server."""

import importlib.util
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_ssl_robust.space_backend import MAX_SIDE, SpaceBackend, SpaceError, fit_image, leaderboard, read_image

from conftest import make_tiny_backbone

APP = Path(__file__).resolve().parents[1] / "space" / "app.py"
CASES = [("classification", "pgd"), ("classification", "embed"), ("segmentation", "segpgd"),
         ("segmentation", "embed"), ("depth", "depth_pgd"), ("depth", "embed"),
         ("classification", "apgd"), ("segmentation", "apgd"), ("depth", "apgd")]
TASK_ATTACK = {"pgd", "segpgd", "depth_pgd"}  # the UI sends `task` for these


def load_app():
    spec = importlib.util.spec_from_file_location("space_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_backend(tmp_path_factory, heads_dir: str | None = None) -> SpaceBackend:
    """A backend with one tiny random encoder; its heads train on 32 ShapesWorld images for 1 epoch,
    once per session (the disk cache is shared by this file and test_space_browser.py)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.getbasetemp() / "space"
    if not (root / "tiny-enc" / "config.json").is_file():
        make_tiny_backbone("dinov2").save_pretrained(root / "tiny-enc")
    b = SpaceBackend(encoders=[str(root / "tiny-enc")], cache_dir=str(root / "cache"), heads_dir=heads_dir or str(root / "no-heads"),
                     train_samples=32, train_epochs=1)
    b.prepare_examples()
    return b


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return make_backend(tmp_path_factory)


@pytest.fixture(scope="module")
def client(backend, tmp_path_factory):
    gradio_client = pytest.importorskip("gradio_client", reason="the Space needs `pip install hf-ssl-robust[space]`")
    pytest.importorskip("gradio", reason="the Space needs `pip install hf-ssl-robust[space]`")
    results = tmp_path_factory.mktemp("results") / "results.json"
    results.write_text(json.dumps(fake_records()))
    demo = load_app().build_demo(backend, results=[str(results)])
    demo.queue(default_concurrency_limit=1, max_size=8)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        yield gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


def fake_records():
    base = dict(dataset="shapes", steps=5, num_samples=16)
    rows = []
    for enc, clean, adv in (("tiny-dino", 0.8, 0.2), ("tiny-dino-deacl", 0.7, 0.5)):
        rows.append(dict(base, encoder=enc, task="classification", attack="none", eps=0.0, metric="accuracy", value=clean))
        for attack in ("embed", "pgd"):
            rows.append(dict(base, encoder=enc, task="classification", attack=attack, eps=8 / 255, metric="accuracy", value=adv))
    return rows


def example(backend, name="shapesworld_0"):
    return next(p for p in backend.examples if Path(p).stem == name)


# -- the app through its API ------------------------------------------------------------------


@pytest.mark.parametrize("task,attack", CASES)
def test_attack_endpoint(client, backend, task, attack):
    from gradio_client import handle_file

    choice = "task" if attack in TASK_ATTACK else attack
    out = client.predict("tiny-enc", task, choice, 16, 3, 64, handle_file(example(backend)), api_name="/attack")
    status, cls_c, cls_a, seg_c, seg_a, depth, adv, pert, metrics, losses = out
    assert task in status and "16/255" in status
    clean = np.asarray(Image.open(example(backend)).convert("RGB"), dtype=np.int16)
    adv_px = np.asarray(Image.open(adv).convert("RGB"), dtype=np.int16)  # PNG: exact pixels
    assert adv_px.shape == clean.shape == (64, 64, 3)
    assert np.abs(adv_px - clean).max() <= 16 and np.abs(adv_px - clean).max() > 0
    assert Image.open(pert).size == (64, 64) and Image.open(losses).size[0] > 100
    assert metrics["attack"] == attack and metrics["linf_255"] <= 16 + 1e-3
    assert metrics["cls_l2_change"] > 0 and metrics["patch_l2_change"] > 0
    if task == "classification":
        assert not (seg_c or seg_a or depth)
        assert len(cls_c["confidences"]) == 5 and cls_c["label"] == metrics["clean_top1"]
        # at ε = 16/255 the tiny encoder's class probabilities move
        assert metrics["clean_class_prob_drop"] != 0 and cls_a["label"] == metrics["adv_top1"]
        assert "true_class" in metrics  # a ShapesWorld example: its label is known
    elif task == "segmentation":
        assert not (cls_c or cls_a or depth)
        assert Image.open(seg_c["image"]).size == (64, 64) and seg_c["annotations"]
        assert metrics["pixels_flipped"] > 0 and "clean_miou" in metrics
    else:
        assert Image.open(depth).size[0] > 200
        assert metrics["depth_mean_abs_change_m"] > 0 and "rmse_increase_m" in metrics


def test_photo_is_downscaled_with_a_note(client, backend):
    from gradio_client import handle_file

    photos = [p for p in backend.examples if not Path(p).stem.startswith("shapesworld")]
    if not photos:
        pytest.skip("no example photos: scikit-image / scikit-learn are not installed")
    photo = photos[0]
    status, *_, adv, _, metrics, _ = client.predict("tiny-enc", "classification", "embed", 4, 1, 48, handle_file(photo), api_name="/attack")
    assert "downscaled" in status and max(Image.open(adv).size) == 48 and metrics["steps"] == 1


def test_bad_inputs_give_clear_messages(client, backend, tmp_path):
    from gradio_client import handle_file

    img = handle_file(example(backend))
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    cases = [
        (("tiny-enc", "classification", "task", 8, 2, 64, handle_file(not_image)), "not an image this app can read"),
        (("someone/no-such-model", "classification", "task", 8, 2, 64, img), "Could not load encoder"),
        (("/etc", "classification", "task", 8, 2, 64, img), "is not a Hub model id"),
        (("tiny-enc", "depth", "pgd", 8, 2, 64, img), "not in the list of choices"),
        (("tiny-enc", "classification", "task", 99, 2, 64, img), "99"),
        (("tiny-enc", "classification", "task", 8, 500, 64, img), "500"),
        (("tiny-enc", "classification", "task", 8, 2, 64, None), "No image"),
    ]
    for args, message in cases:
        with pytest.raises(Exception, match=message) as err:
            client.predict(*args, api_name="/attack")
        assert "Traceback" not in str(err.value)


def test_results_endpoint(client, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "results.json"
    path.write_text(json.dumps(fake_records()))
    summary, board, tables, curves = client.predict(None, handle_file(path), api_name="/results")
    assert "6 records" in summary and "tiny-dino" in summary
    assert "Table 1" in tables and "EmbedAttack" in tables
    assert board["headers"][:3] == ["task", "dataset", "encoder"] and len(board["data"]) == 2
    assert Image.open(curves).size[0] > 100
    path.write_text('{"not": "records"}')
    with pytest.raises(Exception, match="not a results.json"):
        client.predict(None, handle_file(path), api_name="/results")


# -- the backend directly ---------------------------------------------------------------------


def test_read_image_conversions(tmp_path):
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    arr, notes = read_image(rgba)
    assert arr.shape == (10, 20, 3) and np.allclose(arr, 1.0) and any("transparency" in n for n in notes)
    arr, notes = read_image(Image.new("L", (8, 8), 128))
    assert arr.shape == (8, 8, 3) and any("grayscale" in n for n in notes)
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # a 16-bit grayscale PNG
    arr, notes = read_image(str(tmp_path / "deep.png"))
    assert arr.shape == (8, 8, 3) and arr.max() <= 1 and np.isclose(arr[-1, -1, 0], 63000 / 65535, atol=1e-4)
    arr, _ = read_image(np.random.rand(5, 6, 4).astype(np.float32) * 3)  # out-of-range float RGBA
    assert arr.shape == (5, 6, 3) and 0 <= arr.min() and arr.max() <= 1
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(SpaceError, match="not an image"):
        read_image(str(tmp_path / "x.jpg"))
    with pytest.raises(SpaceError, match="No image"):
        read_image(None)


def test_fit_image_limits():
    big = np.random.rand(900, 1200, 3).astype(np.float32)
    x, notes = fit_image(big, MAX_SIDE)
    assert x.shape == (1, 3, 384, 512) and "downscaled from 1200x900" in notes[0]
    x, notes = fit_image(np.random.rand(4, 6, 3).astype(np.float32), 128, min_side=8)
    assert min(x.shape[-2:]) == 8 and "upscaled" in notes[0]
    with pytest.raises(SpaceError, match="elongated"):
        fit_image(np.zeros((2, 5000, 3), np.float32), 512, min_side=8)


def test_backend_validation(backend):
    with pytest.raises(SpaceError, match="between 0 and 16"):
        backend.validate("tiny-enc", "classification", "pgd", 17, 5, 64)
    with pytest.raises(SpaceError, match="Steps must be between 1 and 50"):
        backend.validate("tiny-enc", "classification", "pgd", 8, 51, 64)
    with pytest.raises(SpaceError, match="Working size"):
        backend.validate("tiny-enc", "classification", "pgd", 8, 5, 4096)
    with pytest.raises(SpaceError, match="Unknown task"):
        backend.validate("tiny-enc", "detection", "pgd", 8, 5, 64)
    assert backend.validate("tiny-enc", "segmentation", "task", 8, 5, 64)[2] == "segpgd"
    with pytest.raises(SpaceError, match="does not apply to depth"):
        backend.validate("tiny-enc", "depth", "pgd", 8, 5, 64)
    assert backend.validate("tiny-enc", "depth", "apgd", 8, 5, 64)[2] == "apgd"
    assert backend.resolve_encoder("facebook/dinov2-small") == "facebook/dinov2-small"


def test_eps_zero_changes_nothing(backend):
    out = backend.run("tiny-enc", "classification", "pgd", 0, 3, example(backend), size=64)
    assert np.array_equal(out.adv_image, out.clean_image) and out.metrics["linf_255"] == 0
    assert out.clean_probs == out.adv_probs


def test_leaderboard_rows():
    headers, rows = leaderboard(fake_records())
    by_encoder = {r[2]: r for r in rows}
    row = dict(zip(headers, by_encoder["tiny-dino"]))
    assert [row["clean"], row["attacked (worst)"]] == [0.8, 0.2] and row["ε"] == "8/255"
    assert row["± clean (95 %)"] is None and row["± attacked (95 %)"] is None  # records without intervals (older runs)
    assert by_encoder["tiny-dino-deacl"][headers.index("change")] == pytest.approx(-0.2)
    assert headers[-1] == "warnings" and by_encoder["tiny-dino"][-1] == ""  # no flags in these records
    with_ci = [dict(r, ci95=[r["value"] - 0.05, r["value"] + 0.05], **({} if r["attack"] == "none" else {"separated_from_clean": False}))
               for r in fake_records()]
    headers, rows = leaderboard(with_ci)
    row = dict(zip(headers, next(r for r in rows if r[2] == "tiny-dino")))
    assert row["± clean (95 %)"] == pytest.approx(0.05) and row["± attacked (95 %)"] == pytest.approx(0.05)
    assert row["warnings"] == "not separated from clean"


def test_leaderboard_endpoint(client):
    """The Leaderboard tab's API over its default sources: the committed embedded-default and strength runs."""
    boards = client.predict("classification", "all", "L∞ ε = 8/255", "all", "rank", False, api_name="/leaderboard")
    assert sorted(b["protocol"]["num_samples"] for b in boards) == [128, 256]  # two protocols: two boards, marked
    assert all("not ranked against each other" in b["note"] for b in boards)
    embedded = next(b for b in boards if b["protocol"]["num_samples"] == 256)
    assert [row[1] for row in embedded["table"]] == ["shapes-resnet-tiny-deacl", "shapes-resnet-tiny", "prior (image-free)"]  # PGD: 0.13 vs 0.00; the prior unranked
    assert embedded["headers"][:6] == ["rank", "encoder", "family", "accuracy (strongest)", "evaluation", "clean"]
    by_clean = client.predict("classification", "all", "L∞ ε = 8/255", "all", "clean", True, api_name="/leaderboard")
    clean = [row[5] for row in next(b for b in by_clean if b["protocol"]["num_samples"] == 256)["table"] if row[0] != "–"]
    assert clean == sorted(clean, reverse=True)
    depth = client.predict("depth", "all", "all", "ResNet", "rank", False, api_name="/leaderboard")
    assert len(depth) == 4 and {b["task"] for b in depth} == {"depth"}  # 2/255, 4/255, 8/255 x2
    with pytest.raises(Exception, match="not in the list of choices|not in choices"):
        client.predict("captioning", "all", "all", "all", "rank", False, api_name="/leaderboard")


def test_leaderboard__warnings_column_shows_flags():
    records = [dict(r, flags=["not_converged"]) if r["attack"] != "none" else r for r in fake_records()]
    headers, rows = leaderboard(records)
    assert all(row[headers.index("warnings")] == "not_converged" for row in rows)
