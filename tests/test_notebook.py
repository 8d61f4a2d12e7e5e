"""notebooks/explore_anomalies.ipynb: committed without outputs, and runs top to bottom with nbclient (a
real Jupyter kernel of this virtualenv's Python) on a real sink, with or without frame_features.

The sink comes from the `events_sink` fixture (tests/pipeline_fixture.py: the suite's pipeline run); redirect it to run the notebook
on another sink.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from avwatch.sink import read_events

pytestmark = [pytest.mark.spark, pytest.mark.kafka]  # the sink is the suite's pipeline run

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_anomalies.ipynb"
KERNEL = "avwatch-test-venv"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec for this interpreter (the venv's, with its ipykernel) in a folder of our own, so no
    other `python3` kernel on the machine can be picked up instead."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "avwatch tests", "language": "python"}))
    return root


def execute(sink: Path, kernel_dir: Path, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("AVWATCH_SINK", str(sink))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name=KERNEL, allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    return nb


def outputs(nb) -> list:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def output_text(nb) -> str:
    parts = []
    for o in outputs(nb):
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            parts.append(o.data.get("text/plain", ""))
    return "\n".join(parts)


def images(nb) -> list[str]:
    return [o.data["image/png"] for o in outputs(nb) if o.output_type == "display_data" and "image/png" in o.data]


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'SINK = os.environ.get("AVWATCH_SINK", ".avwatch/demo/sink")' in params[0].source
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) - 2   # explained step by step
    sources = "\n".join(c.source for c in code)
    assert "deltalake" in sources and "pyspark" not in sources


def test_notebook_runs_on_the_sink(events_sink, injected, kernel_dir, monkeypatch):
    nb = execute(events_sink, kernel_dir, monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    text = output_text(nb)
    events = read_events(events_sink)
    for stream in set(events["stream_id"]):
        assert stream in text
    for detector in set(events["detector"]):
        assert detector in text
    for stream, detector in injected:   # the injected defects are in the per-stream x detector counts
        assert stream in text and detector in text
    assert f"{len(events)} event(s) in {events['stream_id'].nunique()} stream(s)" in text
    pictures = images(nb)
    assert len(pictures) >= 3            # timelines, thumbnails, the chosen event's evidence (and features)
    if (Path(events_sink) / "frame_features" / "_delta_log").is_dir():
        assert "frame(s) of" in text and "around the event" in text
        assert len(pictures) >= 4


def test_notebook_runs_without_frame_features(events_sink, kernel_dir, monkeypatch, tmp_path):
    sink = tmp_path / "sink"
    shutil.copytree(Path(events_sink) / "anomaly_events", sink / "anomaly_events")
    nb = execute(sink, kernel_dir, monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    text = output_text(nb)
    assert "frame_features: no such table in this sink" in text
    assert "This sink has no frame_features table" in text
    assert len(images(nb)) >= 2
