"""Results as a dataset: runs to Parquet records with provenance, the card, the Hub push (faked at
the `HfApi` boundary) and the reading back through `datasets`."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from hf_ssl_robust import hub, sharing
from hf_ssl_robust.cli import main as cli_main
from hf_ssl_robust.identity import encoder_identity
from hf_ssl_robust.uncertainty import record_interval

REPO = Path(__file__).resolve().parents[1]
# The embedded default's run as committed before fingerprints, priors and intervals (f5696b5): the format older
# results files still have; COMMITTED is today's run (its own test below).
EMBEDDED = REPO / "tests" / "data" / "before_fingerprints" / "embedded_default"
COMMITTED = REPO / "docs" / "embedded_default"
STRENGTH = REPO / "docs" / "strength"
TINY_RUN = dict(tasks=["classification"], attacks=["embed", "pgd"], eps=["4/255"], steps=2, max_eval_samples=8,
                num_train_samples=32, head_epochs=1, image_size=32, batch_size=4, num_examples=0, priors="no")  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run(tiny_dinov2_path, tmp_path_factory):
    """A real benchmark run of a tiny random encoder at ε = 4/255 (the embedded default ran 8/255)."""
    from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark

    out = tmp_path_factory.mktemp("tiny_run")
    run_benchmark(BenchmarkConfig(encoders=[tiny_dinov2_path], output_dir=str(out), **TINY_RUN))
    return out


def push_to(run_dir, out) -> Path:
    assert cli_main(["results", "push", str(run_dir), "--to", str(out)]) == 0
    return Path(out)


def copy_run(src: Path, dst: Path, edit=None) -> Path:
    """A copy of a run folder, with `edit(records)` applied to its results.json."""
    shutil.copytree(src, dst)
    if edit is not None:
        records = json.loads((dst / "results.json").read_text())
        edit(records)
        (dst / "results.json").write_text(json.dumps(records))
    return dst


# --- rows and provenance --------------------------------------------------------------------------
def test_run_records__embedded_default_gets_derived_identity_and_full_provenance():
    rows = sharing.run_records(EMBEDDED)
    records = json.loads((EMBEDDED / "results.json").read_text())
    info = json.loads((EMBEDDED / "run_info.json").read_text())
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        assert all(row[k] == record[k] for k in record)  # every field of results.json kept
        assert row["encoder_fingerprint"] == encoder_identity(record["encoder"]).fingerprint
        assert row["identity_derived"] is True  # the committed run predates fingerprints
    row = rows[0]
    assert row["git_revision"] == info["git_revision"] and row["package_version"] == info["versions"]["hf_ssl_robust"]
    assert row["torch_version"] == info["versions"]["torch"] and row["transformers_version"] == info["versions"]["transformers"]
    assert (row["device"], row["num_processes"], row["seed"], row["restarts"]) == ("cpu", 1, 0, 1)
    assert (row["dataset_id"], row["dataset_split"], row["encoder_family"]) == ("generated:shapes", "test", "ResNet")
    assert row["command"].startswith("hf-ssl-robust benchmark ") and "--eps 8/255" in row["command"] and "--steps 20" in row["command"]
    assert {r["encoder_card"] for r in rows} == {f"hf_ssl_robust/assets/{n}/README.md" for n in ("shapes-resnet-tiny", "shapes-resnet-tiny-deacl")}


def test_run_records__recorded_identity_wins_over_derivation(tmp_path):
    run = copy_run(EMBEDDED, tmp_path / "run", edit=lambda rs: [r.update(encoder_id="me/enc", encoder_fingerprint="f" * 16) for r in rs])
    rows = sharing.run_records(run)
    assert {(r["encoder_id"], r["encoder_fingerprint"], r["identity_derived"]) for r in rows} == {("me/enc", "f" * 16, False)}
    assert rows[0]["encoder_card"] == "https://huggingface.co/me/enc"


def test_run_records__run_info_identities_used_when_records_lack_them(tmp_path):
    """Runs made after fingerprints: run_info.json maps each encoder name to its identity."""
    run = copy_run(EMBEDDED, tmp_path / "run")
    info = json.loads((run / "run_info.json").read_text())
    info["encoder_identities"] = {n: dict(name=n, source=f"org/{n}", kind="hub", revision="c" * 40, weights_sha256="d" * 64,
                                          fingerprint=n[-5:].rjust(16, "0")) for n in info["encoders"]}  # fmt: skip
    (run / "run_info.json").write_text(json.dumps(info))
    rows = sharing.run_records(run)
    assert {(r["encoder_id"], r["encoder_revision"], r["identity_derived"]) for r in rows} == {
        ("org/shapes-resnet-tiny", "c" * 40, False), ("org/shapes-resnet-tiny-deacl", "c" * 40, False)}
    with_ids = copy_run(run, tmp_path / "run2", edit=lambda rs: [r.update(encoder_id=f"org/{r['encoder']}",
                        encoder_fingerprint=r["encoder"][-5:].rjust(16, "0")) for r in rs])  # fmt: skip
    assert {r["encoder_weights_sha256"] for r in sharing.run_records(with_ids)} == {"d" * 64}


def test_run_records__strength_run_becomes_records_with_worst_case():
    rows = sharing.run_records(STRENGTH)
    data = json.loads((STRENGTH / "strength.json").read_text())
    for s in data["strength"]:
        ours = [r for r in rows if r["task"] == s["task"] and r["eps"] in (0.0, s["eps"])]
        mine = {r["attack"]: r["value"] for r in ours if r["encoder"] != "prior"}
        assert mine["worst"] == s["worst"] and mine["none"] == s["clean"] and mine[s["apgd_loss"]] == s["apgd"]
        assert mine[s["square_attack"]] == s["square"] and {r["value"] for r in ours if r["encoder"] == "prior"} == {s["prior"]}
        assert mine[data["attacks_per_task"][s["task"]][1]] == s["paper"]  # pgd / segpgd / depth_pgd, by name
    assert {r["num_samples"] for r in rows} == {data["args"]["max_eval_samples"]}
    assert rows[0]["encoder_fingerprint"] == encoder_identity("shapes-resnet-tiny").fingerprint
    assert rows[0]["command"].startswith("python scripts/bench_strength.py --eps 2/255 4/255 8/255")


def test_run_records__strength_run_publishes_square_flags_and_intervals(tmp_path):
    data = json.loads((STRENGTH / "strength.json").read_text())
    first = data["strength"][0]
    first.update(square=0.01, square_attack="square", prior=0.18, flags={"none": ["randomized"], "pgd": ["zero_gradient"]},
                 ci95={"clean": [0.88, 0.95], "square": [0.0, 0.03]})  # fmt: skip
    data.update(square_queries=1000, strength=[first])
    (tmp_path / "strength.json").write_text(json.dumps(data))
    rows = sharing.run_records(tmp_path)
    by = {r["attack"]: r for r in rows if r["encoder"] != "prior"}
    assert by["square"]["value"] == 0.01 and json.loads(by["square"]["extra"])["queries"] == 1000
    assert (by["square"]["steps"], by["square"]["step_size"]) == (by["pgd"]["steps"], by["pgd"]["step_size"])  # one board
    assert by["pgd"]["flags"] == ["zero_gradient"] and by["none"]["flags"] == ["randomized"] and by["embed"]["flags"] == []
    assert record_interval(by["square"]) == [0.0, 0.03] and record_interval(by["none"]) == [0.88, 0.95]
    assert record_interval(by["embed"]) is None
    prior = [r for r in rows if r["encoder"] == "prior"]
    assert [(r["value"], r["encoder_id"], r["attack"]) for r in prior] == [(0.18, "prior", "none")]
    assert by["none"]["encoder"] == data["encoder"] and by["none"]["value"] == first["clean"]


def test_run_records__bundled_encoder_id_is_the_same_on_every_machine(tmp_path):
    """A bundled encoder is published as `hf_ssl_robust/assets/NAME`, not the absolute folder of one checkout."""
    assert encoder_identity("shapes-resnet-tiny").public_id == "hf_ssl_robust/assets/shapes-resnet-tiny"
    assert {r["encoder_id"] for r in sharing.run_records(STRENGTH)} == {"hf_ssl_robust/assets/shapes-resnet-tiny", "prior"}
    run = copy_run(COMMITTED, tmp_path / "run", edit=lambda rs: [
        r.update(encoder_id=f"/elsewhere/checkout/hf_ssl_robust/assets/{Path(r['encoder_id']).name}") for r in rs
        if r["encoder_id"] != "prior"])  # fmt: skip
    ids = {r["encoder_id"] for r in sharing.run_records(run)}
    assert ids == {"prior", "hf_ssl_robust/assets/shapes-resnet-tiny", "hf_ssl_robust/assets/shapes-resnet-tiny-deacl"}, ids


def test_run_records__tiny_run(tiny_run, tiny_dinov2_path):
    rows = sharing.run_records(tiny_run)
    assert {(r["attack"], round(r["eps"] * 255)) for r in rows} == {("none", 0), ("embed", 4), ("pgd", 4)}
    assert {r["encoder_fingerprint"] for r in rows} == {encoder_identity(tiny_dinov2_path).fingerprint}
    assert {r["image_size"] for r in rows} == {32} and {r["num_samples"] for r in rows} == {8}


# --- validation -----------------------------------------------------------------------------------
def test_run_records__no_run_info_is_missing_provenance(tmp_path):
    run = copy_run(EMBEDDED, tmp_path / "run")
    (run / "run_info.json").unlink()
    with pytest.raises(ValueError, match="lacks run_info.json, the run's provenance"):
        sharing.run_records(run)


def test_run_records__unresolvable_encoder_without_identity_refused(tmp_path):
    run = copy_run(EMBEDDED, tmp_path / "run", edit=lambda rs: rs[0].update(encoder="/gone/my-encoder"))
    with pytest.raises(ValueError, match=r"'/gone/my-encoder' has no recorded identity .* cannot be fingerprinted"):
        sharing.run_records(run)


@pytest.mark.parametrize("field, value, message", [
    ("metric", "f1", r"record 0 \(shapes-resnet-tiny / classification / shapes / none ε=0 / f1\): unknown metric 'f1'"),
    ("value", 1.5, r"record 0 .*: value 1.5 outside \[0, 1\] for accuracy"),
    ("eps", 2.0, r"record 0 .*: eps 2.0 outside its range"),
    ("norm", "l3", r"record 0 .*: unknown norm 'l3'"),
    ("num_samples", 0, r"record 0 .*: num_samples 0 must be an integer >= 1"),
    ("task", "captioning", r"record 0 .*: unknown task 'captioning'"),
])  # fmt: skip
def test_run_records__bad_record_refused_naming_it(tmp_path, field, value, message):
    run = copy_run(EMBEDDED, tmp_path / "run", edit=lambda rs: rs[0].update({field: value}))
    with pytest.raises(ValueError, match=message):
        sharing.run_records(run)


def test_validate_rows__negative_rmse_and_missing_fields(tmp_path):
    rows = sharing.run_records(EMBEDDED)
    depth = next(i for i, r in enumerate(rows) if r["metric"] == "rmse")
    bad = [dict(r) for r in rows]
    bad[depth]["value"] = -0.5
    bad[1]["encoder_fingerprint"] = None
    with pytest.raises(ValueError, match=r"2 of 72 records refused:\n  record 1 .*missing provenance \['encoder_fingerprint'\]\n"
                                         rf"  record {depth} .*value -0.5 outside \[0, inf\] for rmse"):
        sharing.validate_rows(bad, "mine")


def test_read_source__doctored_dataset_refused_on_the_way_in(tmp_path):
    folder = push_to(EMBEDDED, tmp_path / "ds")
    table = pq.read_table(folder / sharing.PARQUET_PATH).to_pylist()
    table[3]["value"] = 7.0
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table, schema=sharing.SCHEMA), folder / sharing.PARQUET_PATH)
    with pytest.raises(ValueError, match=r"record 3 \(shapes-resnet-tiny / segmentation .*value 7.0 outside"):
        sharing.read_source(folder)
    pq.write_table(pa.Table.from_pylist([{"encoder": "x", "value": 0.5}]), folder / sharing.PARQUET_PATH)
    with pytest.raises(ValueError, match=r"columns \['encoder_id', .* missing \(missing provenance\)"):
        sharing.read_source(folder)


def test_read_source__not_a_source(tmp_path):
    with pytest.raises(ValueError, match="neither a run folder, a results dataset folder nor a Hub dataset id"):
        sharing.read_source(tmp_path / "nothing here")
    with pytest.raises(ValueError, match="holds no results.json"):
        sharing.run_records(tmp_path)


# --- the dataset folder and datasets --------------------------------------------------------------
def test_results_push_to__round_trips_through_datasets(tmp_path, tiny_run):
    from datasets import load_dataset

    for run in (EMBEDDED, STRENGTH, tiny_run):
        folder = push_to(run, tmp_path / run.name)
        rows = sharing.run_records(run)
        loaded = load_dataset("parquet", data_files=str(folder / sharing.PARQUET_PATH), split="train")
        assert loaded.column_names == sharing.COLUMNS and len(loaded) == len(rows)
        for got, want in zip(loaded, rows):
            assert got == {k: want[k] for k in sharing.COLUMNS}
        assert sharing.read_source(folder) == [{k: r[k] for k in sharing.COLUMNS} for r in rows]


def test_results_push_to__card_yaml_configs_let_load_dataset_find_the_table(tmp_path):
    from datasets import load_dataset

    folder = push_to(EMBEDDED, tmp_path / "ds")
    text = (folder / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/results.parquet"}]}]
    assert "robustness-leaderboard" in meta["tags"]
    loaded = load_dataset(str(folder), "default", split="train")  # as load_dataset("user/name") reads a Hub repo
    assert len(loaded) == 72 and set(loaded["encoder"]) == {"shapes-resnet-tiny", "shapes-resnet-tiny-deacl"}
    assert "**Table 1" in text and "| shapes | shapes-resnet-tiny | 0.93 | 0.11 | 0.00 |" in text
    info = json.loads((EMBEDDED / "run_info.json").read_text())
    assert info["git_revision"] in text and "hf-ssl-robust benchmark --tasks classification segmentation depth" in text
    assert "(derived when shared)" in text


def test_write_results_dataset__duplicates_merged(tmp_path):
    rows = sharing.run_records(EMBEDDED)
    again = [dict(r, run="again") for r in rows]
    folder = sharing.write_results_dataset(rows + again, tmp_path / "ds")
    table = pq.read_table(folder / sharing.PARQUET_PATH).to_pylist()
    assert len(table) == len(rows) and {r["run"] for r in table} == {"embedded_default, again"}
    assert all(r["flags"] == [] for r in table)
    other = [dict(r, run="other-seed", seed=1, value=r["value"] * 0.5 if r["value"] else 0.5) for r in rows[:2]]
    merged = sharing.dedupe(rows + other)
    assert len(merged) == len(rows) and merged[0]["value"] == rows[0]["value"]  # kept, not averaged, but marked
    assert merged[0]["flags"] == ["duplicates_disagree"] and merged[0]["run"] == "embedded_default, other-seed"
    assert merged[2]["flags"] == []


# --- Hub: faked at the HfApi boundary -------------------------------------------------------------
class FakeApi:
    """Stands in for `huggingface_hub.HfApi`: records the calls and reads what would be uploaded."""

    calls: list = []
    fail_with: Exception | None = None

    def __init__(self, token=None):
        FakeApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, kwargs))
        if FakeApi.fail_with is not None:
            raise FakeApi.fail_with

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        FakeApi.calls.append(("upload_folder", kwargs, files, pq.read_table(folder / "data" / "results.parquet").num_rows,
                              (folder / "README.md").read_text()))

        class Info:
            commit_url = f"https://huggingface.co/datasets/{kwargs['repo_id']}/commit/abc"

        return Info()


@pytest.fixture
def fake_hub(monkeypatch):
    FakeApi.calls, FakeApi.fail_with = [], None
    monkeypatch.setattr(sharing, "HfApi", FakeApi)
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return FakeApi.calls


def test_push_results__creates_a_dataset_repo_and_uploads_parquet_and_card(fake_hub, capsys):
    assert cli_main(["results", "push", str(EMBEDDED), "--repo_id", "someone/robustness", "--private"]) == 0
    assert "https://huggingface.co/datasets/someone/robustness/commit/abc" in capsys.readouterr().out
    (_, token), create, upload = fake_hub
    assert create == ("create_repo", "someone/robustness", {"repo_type": "dataset", "private": True, "exist_ok": True})
    kwargs, files, n, card = upload[1:]
    assert kwargs["repo_id"] == "someone/robustness" and kwargs["repo_type"] == "dataset"
    assert files == ["README.md", "data/results.parquet"] and n == 72
    assert 'load_dataset("someone/robustness", split="train")' in card


def test_push_results__hub_errors_and_offline(fake_hub, monkeypatch):
    FakeApi.fail_with = OSError("401 Unauthorized")
    with pytest.raises(hub.HubPushError, match=r"to the dataset 'someone/x' failed \(OSError: 401 Unauthorized\). Log in with"):
        sharing.push_results(EMBEDDED, "someone/x")
    with pytest.raises(ValueError, match="repo_id must be 'user_or_org/name'"):
        sharing.push_results(EMBEDDED, "no-slash")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake_hub.clear()
    with pytest.raises(hub.HubPushError, match="HF_HUB_OFFLINE is set. Write the files with --to PATH"):
        sharing.push_results(EMBEDDED, "someone/x")
    assert fake_hub == []  # refused before any Hub call


def test_read_source__hub_dataset_id_is_downloaded_then_read(monkeypatch, tmp_path):
    folder = push_to(STRENGTH, tmp_path / "snapshot")
    asked = []

    def fake_snapshot_download(repo_id, **kwargs):
        asked.append((repo_id, kwargs["repo_type"]))
        if repo_id != "someone/strength":
            raise OSError("404 Not Found")
        return str(folder)

    monkeypatch.setattr(sharing, "snapshot_download", fake_snapshot_download)
    # per task: the clean and prior rows once, and 3 ε x (EmbedAttack, paper attack, best APGD, Square, worst case)
    assert len(sharing.read_source("someone/strength")) == 3 * (2 + 3 * 5) and asked == [("someone/strength", "dataset")]
    with pytest.raises(ValueError, match=r"Cannot read the Hub dataset 'someone/missing' \(OSError: 404 Not Found\)"):
        sharing.read_source("someone/missing")


def test_run_records__committed_run_keeps_its_recorded_identities_and_prior_rows():
    """Today's committed run records fingerprints (nothing derived) and image-free prior rows."""
    rows = sharing.run_records(COMMITTED)
    encoders = [r for r in rows if r["encoder"] != "prior"]
    assert encoders and all(r["identity_derived"] is False and r["encoder_fingerprint"] for r in encoders)
    assert {r["task"] for r in rows if r["encoder"] == "prior"} == {"classification", "segmentation", "depth"}


def test_encoder_facts__bundled_encoder_recorded_from_another_checkout():
    """A record made in another clone names the bundled folder by that clone's path: family and card still resolve."""
    family, card = sharing._encoder_facts("/elsewhere/clone/hf_ssl_robust/assets/shapes-resnet-tiny")
    assert (family, card) == ("ResNet", "hf_ssl_robust/assets/shapes-resnet-tiny/README.md")
