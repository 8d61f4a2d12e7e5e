"""Detection quality on the field corpus (bench/field_corpus.py): avwatch's detectors and FFmpeg's filters
scored against the injected truth, per detector and macro-averaged, on one part of the corpus.

    .venv/bin/python -m bench.detection_quality                 # the held-out part (what the benchmark reports)
    .venv/bin/python -m bench.detection_quality --part tune -v  # the part thresholds are chosen on, clip by clip

Scoring. An event matches a truth of its detector when it overlaps the truth's span widened by
`MATCH_SLACK_S`; a truth with a matching event is found (true positive), one without is missed; an event
that matches no truth is a false alarm, and so is a second alarm on a truth already found (one alarm per
root cause; pieces of one alarm that touch, less than 0.2 s apart, count once). An alarm the detector
withdrew (raised while the defect seemed to last, then found not to be one) finds nothing; over no truth it
is still a false alarm, because an operator saw it. Events of a detector the
clip lists as `allowed` over the defect (the decoder's error report on damaged packets, a freeze over the
black picture) are neither. A detector with false alarms and no truth in the part scores F1 0, so the
macro-F1 is over every detector that has a truth or raised an event. False alarms per hour are counted
on the clean clips alone. FFmpeg's filters (blackdetect, freezedetect, blurdetect, blockdetect) are scored
the same way; blurdetect and blockdetect give per-frame values (blockdetect's running mean de-averaged),
turned into events at the threshold that scores best on the `tune` part.

Each blur truth carries how much the blur changed the picture and how much the clip's encoding did (luma
PSNR, field_corpus.Truth): a blur of 2 px at 1080p over footage enlarged from QCIF changes it less than the
encoder does. The score counts such truths like any other; beside it the summary says how many were missed
(`missed_below_coding`) and what the F1s would be without them (`*_without_below_coding`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.field_corpus import FPS, Clip, build  # noqa: E402

MATCH_SLACK_S = 0.5
PIECE_GAP_S = 0.2
FFMPEG_DETECTORS = ("black", "freeze", "blur", "blockiness")


@dataclass
class Found:
    detector: str
    start_s: float
    end_s: float
    check: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    end_errors: list = field(default_factory=list)
    tp_below: int = 0   # of tp and fn: truths whose change to the picture was under the encoding's own
    fn_below: int = 0   # (Truth.below_coding), reported beside the score, never taken out of it

    def visible(self) -> "Tally":
        """The same tally without the truths below the coding."""
        return Tally(self.tp - self.tp_below, self.fp, self.fn - self.fn_below)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        if self.tp == 0:
            return 0.0
        return 2 * self.precision * self.recall / (self.precision + self.recall)


def _merge_pieces(events: list[Found]) -> list[Found]:
    out: list[Found] = []
    for e in sorted(events, key=lambda e: (e.detector, e.start_s)):
        last = out[-1] if out else None
        if last and last.detector == e.detector and e.start_s - last.end_s < PIECE_GAP_S:
            last.end_s = max(last.end_s, e.end_s)
        else:
            out.append(Found(e.detector, e.start_s, e.end_s, e.check, dict(e.details)))
    return out


def _overlaps(e: Found, a: float, b: float, slack: float = MATCH_SLACK_S) -> bool:
    return e.start_s <= b + slack and e.end_s >= a - slack


def score_clip(clip: Clip, events: list[Found], tallies: dict[str, Tally]) -> list[str]:
    """Add one clip's outcome to `tallies`; returns what went wrong, for the verbose listing."""
    notes = []
    events = [e for e in _merge_pieces(events)
              if not any(d == e.detector and _overlaps(e, a, b, 0.0) for d, a, b in clip.allowed)]
    used: set[int] = set()
    for t in clip.truths:
        tally = tallies.setdefault(t.detector, Tally())
        hits = [i for i, e in enumerate(events) if e.detector == t.detector and _overlaps(e, t.start_s, t.end_s)
                and not e.details.get("withdrawn")]
        if hits:
            tally.tp += 1
            tally.tp_below += t.below_coding
            tally.end_errors.append(events[hits[0]].end_s - t.end_s)
            used.add(hits[0])
        else:
            tally.fn += 1
            tally.fn_below += t.below_coding
            seen = "" if t.change_psnr_db is None else \
                f"; changed the picture by {t.change_psnr_db:g} dB PSNR, the encoding by {t.coding_psnr_db:g} dB"
            notes.append(f"missed {t.detector} {t.start_s:.2f}-{t.end_s:.2f} ({t.variant}{seen})")
    for i, e in enumerate(events):
        if i not in used and not (e.details.get("withdrawn") and any(
                t.detector == e.detector and _overlaps(e, t.start_s, t.end_s) for t in clip.truths)):
            tallies.setdefault(e.detector, Tally()).fp += 1
            notes.append(f"false {e.detector} {e.start_s:.2f}-{e.end_s:.2f} {e.check} "
                         f"{json.dumps(e.details, default=str)[:160]}")
    return notes


def summary(clips: list[Clip], results: dict[str, list[Found]], clean: set[str] | None = None,
            echo=None) -> dict:
    """Scores of a part; `clean`: the names of its clean clips (default: the clips without truths); `echo`:
    where to list each clip's misses and false alarms."""
    tallies: dict[str, Tally] = {}
    clean_s = clean_fp = 0.0
    for c in clips:
        before = sum(t.fp for t in tallies.values())
        notes = score_clip(c, results[c.name], tallies)
        if echo is not None and notes:
            echo(f"{c.name} ({', '.join(c.shaping)}):\n  " + "\n  ".join(notes))
        if (c.clean if clean is None else c.name in clean):
            clean_s += c.duration_s
            clean_fp += sum(t.fp for t in tallies.values()) - before
    per = {d: {"precision": round(t.precision, 3), "recall": round(t.recall, 3), "f1": round(t.f1, 3),
               "tp": t.tp, "fp": t.fp, "fn": t.fn,
               "end_error_s_max": round(max(map(abs, t.end_errors)), 2) if t.end_errors else None,
               **({"missed_below_coding": t.fn_below, "found_below_coding": t.tp_below,
                   "f1_without_below_coding": round(t.visible().f1, 3)} if t.tp_below + t.fn_below else {})}
           for d, t in sorted(tallies.items())}
    visible = [v.get("f1_without_below_coding", v["f1"]) for v in per.values()]
    return {"macro_f1": round(float(np.mean([v["f1"] for v in per.values()])), 3) if per else 1.0,
            # beside the score, not instead of it: the same without truths that changed the picture less than
            # the clip's encoding did (a blur of 2 px at 1080p over footage enlarged from QCIF)
            "macro_f1_without_below_coding": round(float(np.mean(visible)), 3) if per else 1.0,
            "per_detector": per, "clean_hours": round(clean_s / 3600, 3),
            "false_alarms_clean": int(clean_fp),
            "false_alarms_per_hour_clean": round(clean_fp / (clean_s / 3600), 2) if clean_s else 0.0}


# -- avwatch ------------------------------------------------------------------------------------------


def avwatch_events(path: str) -> list[Found]:
    from avwatch.local import analyze_source
    from detectors.config import DetectorConfig

    rows = analyze_source(path, DetectorConfig.build(None)).rows
    out = []
    for r in rows:
        details = r.get("details")
        if isinstance(details, str):
            try:
                details = json.loads(details)
            except ValueError:
                details = {"text": details}
        out.append(Found(r["detector"], float(r["start_s"]), float(r["end_s"]), r.get("check") or "", details or {}))
    return out


def _pool(workers: int) -> ProcessPoolExecutor:
    """Workers started afresh, not forked: a fork after the corpus build (PyAV's and FFmpeg's threads, the
    decoder-report lock) could copy a held lock into a worker, which then waits on it forever."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def run_avwatch(clips: list[Clip], workers: int = 2) -> dict[str, list[Found]]:
    with _pool(workers) as pool:
        return dict(zip([c.name for c in clips], pool.map(avwatch_events, [c.path for c in clips])))


# -- FFmpeg ---------------------------------------------------------------------------------------------


FFMPEG_FILTERS = ("blackdetect=d=1.0:pix_th=0.10,freezedetect=n=-60dB:d=2,blurdetect,blockdetect,"
                  "metadata=mode=print:file=-")


def ffmpeg_measure(path: str) -> dict:
    """One FFmpeg pass: blackdetect and freezedetect intervals, per-frame blurdetect and blockdetect values.
    Kept next to the clip (FFmpeg's answer depends only on the clip and the filters): a second benchmark run
    of the same corpus does not pay the ~10 minutes again."""
    cached = Path(path).with_suffix(f".ffmpeg-{hashlib.sha256(FFMPEG_FILTERS.encode()).hexdigest()[:8]}.json")
    if cached.exists():
        return json.loads(cached.read_text())
    out = _ffmpeg_measure(path)
    cached.write_text(json.dumps(out))
    return out


def _ffmpeg_measure(path: str) -> dict:
    from tests.media import env_threads, ffmpeg

    vf = FFMPEG_FILTERS
    cmd = [ffmpeg(), "-hide_banner", "-nostats", "-threads", "1", "-i", path, "-vf", vf, "-an", "-f", "null", "-"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env_threads())
    text = p.stdout + p.stderr
    black = [(float(a), float(b)) for a, b in re.findall(r"black_start:([0-9.]+) black_end:([0-9.]+)", text)]
    fs = [float(x) for x in re.findall(r"lavfi\.freezedetect\.freeze_start=([0-9.]+)", text)]
    fe = [float(x) for x in re.findall(r"lavfi\.freezedetect\.freeze_end=([0-9.]+)", text)]
    frames = re.split(r"frame:\d+\s+pts:", text)[1:]
    number = r"(-?[0-9][0-9.]*(?:[eE][-+]?[0-9]+)?)"
    blur = [float(m.group(1)) if (m := re.search(r"lavfi\.blur=" + number, f)) else None for f in frames]
    block = [float(m.group(1)) if (m := re.search(r"lavfi\.block=" + number, f)) else None for f in frames]
    return {"black": black, "freeze": list(zip(fs, fe + [len(frames) / FPS] * (len(fs) - len(fe)))),
            "blur": blur, "block": block}


def _per_frame(running: list) -> list:
    """FFmpeg 5.1's blockdetect attaches the running mean of its per-frame value to each frame (lavfi.block);
    de-averaged: v_n = n m_n - (n-1) m_(n-1)."""
    out, prev, n = [], 0.0, 0
    for m in running:
        if m is None:
            out.append(None)
            continue
        n += 1
        out.append(n * m - (n - 1) * prev)
        prev = m
    return out


def runs_above(values: list[float], threshold: float, min_frames: int = 3, gap: int = 12) -> list[tuple[float, float]]:
    """Frames above threshold -> (start_s, end_s) runs (gaps under `gap` frames merged, >= min_frames long)."""
    idx = [i for i, v in enumerate(values) if v is not None and v == v and v > threshold]
    spans: list[list[int]] = []
    for i in idx:
        if spans and i - spans[-1][1] <= gap:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return [(a / FPS, (b + 1) / FPS) for a, b in spans if b - a + 1 >= min_frames]


def ffmpeg_events(m: dict, blur_t: float, block_t: float) -> list[Found]:
    out = [Found("black", a, b) for a, b in m["black"]] + [Found("freeze", a, b) for a, b in m["freeze"]]
    out += [Found("blur", a, b) for a, b in runs_above(m["blur"], blur_t)]
    out += [Found("blockiness", a, b) for a, b in runs_above(m["block"], block_t)]
    return out


def _only(clips: list[Clip], detectors) -> list[Clip]:
    """Clips restricted to the truths of `detectors` (FFmpeg has no filter for the others)."""
    return [replace(c, truths=[t for t in c.truths if t.detector in detectors]) for c in clips]


def run_ffmpeg(tune: list[Clip], held: list[Clip], workers: int = 2) -> dict:
    """FFmpeg's filters with blur/block thresholds chosen on the tune part, scored on the held-out part."""
    with _pool(workers) as pool:
        measured = dict(zip([c.name for c in tune + held], pool.map(ffmpeg_measure, [c.path for c in tune + held])))
    for m in measured.values():
        m["block"] = _per_frame(m["block"])
    tune_c = _only(tune, FFMPEG_DETECTORS)
    allv = lambda k: np.array([v for c in tune for v in measured[c.name][k] if v is not None])  # noqa: E731
    best = {}
    for key, det in (("blur", "blur"), ("block", "blockiness")):
        grid = np.unique(np.quantile(allv(key), np.linspace(0.5, 0.999, 60)))
        scores = []
        for t in grid:
            res = {c.name: [e for e in ffmpeg_events(measured[c.name], t if det == "blur" else np.inf,
                                                      t if det == "blockiness" else np.inf) if e.detector == det]
                   for c in tune_c}
            tallies: dict[str, Tally] = {}
            for c in tune_c:
                score_clip(c, res[c.name], tallies)
            scores.append((tallies.get(det, Tally()).f1, float(t)))
        best[det] = max(scores)[1]
    held_c = _only(held, FFMPEG_DETECTORS)
    results = {c.name: ffmpeg_events(measured[c.name], best["blur"], best["blockiness"]) for c in held_c}
    out = summary(held_c, results, clean={c.name for c in held if c.clean})
    out["thresholds"] = {"blurdetect": round(best["blur"], 4), "blockdetect": round(best["blockiness"], 4)}
    out["detectors"] = list(FFMPEG_DETECTORS)
    return out


def evaluate(part: str = "held_out", verbose: bool = False, with_ffmpeg: bool = True, echo=print) -> dict:
    clips = build(echo=echo)
    chosen = [c for c in clips if c.split == part]
    out = summary(chosen, run_avwatch(chosen), echo=echo if verbose else None)
    out["part"] = part
    out["clips"] = len(chosen)
    if with_ffmpeg:
        out["ffmpeg"] = run_ffmpeg([c for c in clips if c.split == "tune"], chosen)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["tune", "held_out"], default="held_out")
    p.add_argument("-v", "--verbose", action="store_true", help="list every miss and false alarm")
    p.add_argument("--no-ffmpeg", action="store_true")
    args = p.parse_args(argv)
    out = evaluate(args.part, args.verbose, not args.no_ffmpeg)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
