"""Where blur's stage-2 levels were chosen: the field corpus's tune part plus two extra draws of its blur and clean
recipes (seeds 30000-30023 and 31000-31023, outside both parts), replayed through blur's stage 2 with candidate options.

    .venv/bin/python -m bench.blur_tuning                       # the defaults against rules and levels changed
    .venv/bin/python -m bench.blur_tuning '{"onset_s": 0}' ...  # any options, one JSON object per line

The tune part holds only three blurs; each extra draw adds 16 blurs (sigma 2-10 at 1080p on upscaled, boxed
and SD footage) and 8 clean programmes (4 minutes) built by the corpus's own recipes, cached under
.cache/blur_tuning/ and .cache/blur_tuning2/ (the second draw since blur 1.6). Each clip is decoded once and
its stage-1 rows kept, so a candidate is scored in seconds.
The held-out part is never read here.
"""
from __future__ import annotations

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench.field_corpus as corpus  # noqa: E402
from bench.detection_quality import Found, Tally, score_clip  # noqa: E402

CACHE = ROOT / ".cache" / "blur_tuning"
# the extra draws, each built once into its own folder: the first from blur 1.3 on, the second from blur 1.6
EXTRA_DRAWS = {"extra": (30000, CACHE), "extra2": (31000, ROOT / ".cache" / "blur_tuning2")}
EXTRA_PLAN = ["blur"] * 16 + ["clean"] * 8
COLUMNS = ("t", "frame_dur", "blur_sharpness", "blur_cut", "blur_contrast", "luma_std")


def extra_clips(draw: str = "extra", echo=print) -> list[corpus.Clip]:
    """An extra draw, built once (its recipes and seeds are fixed; the index says which clips exist)."""
    seeds, where = EXTRA_DRAWS[draw]
    index = where / "corpus.json"
    if index.exists():
        return corpus.load(index)
    where.mkdir(parents=True, exist_ok=True)
    footage = corpus.Footage(where)
    recipes = {r[0]: r for r in corpus.RECIPES}
    clips = []
    for i, name in enumerate(EXTRA_PLAN):
        _, make, sizes, seconds, _ = recipes[name]
        seed = seeds + i
        rng = np.random.default_rng(seed)
        size = corpus.SIZES[sizes[int(rng.integers(len(sizes)))]]
        clip = corpus.Clip(f"x{name}_s{seed}", seed, draw, name, str(where / f"x{name}_s{seed}.mp4"), seconds,
                           size, [])
        make(footage, clip, rng, None)
        clip.shaping = [str(s) for s in clip.shaping]
        clips.append(clip)
        echo(f"[blur_tuning] {i + 1}/{len(EXTRA_PLAN)} {clip.name} {size[0]}x{size[1]}: {', '.join(clip.shaping)}")
    index.write_text(json.dumps([asdict(c) for c in clips], indent=1))
    return clips


def stage1_rows(path: str) -> dict:
    """A clip's video stage-1 columns (the converter's decode and segments, blur's stage 1), kept next to it."""
    cached = CACHE / "rows" / Path(path).parent.name / (Path(path).stem + ".npz")  # per corpus build: names repeat
    if cached.exists():
        return dict(np.load(cached))
    from avwatch.convert.decode import MediaDecoder
    from avwatch.convert.segments import Segmenter
    from detectors.config import DetectorConfig
    from detectors.features import stage1

    config = DetectorConfig.build(["blur"])
    decoder = MediaDecoder(path)
    segmenter = Segmenter("blur-tuning", decoder.info)
    segments = [s for item in decoder.items() for s in segmenter.add(item)] + segmenter.finish()
    parts = [stage1("video_segment", s.table, config).features for s in segments if s.kind == "video"]
    out = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in COLUMNS}
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cached, **out)
    return out


def replay(rows: dict, options: dict, per_call: int = 25) -> list[Found]:
    """blur's stage 2 over a clip's rows, one second per call as the job feeds it."""
    from detectors.blur import Blur, BlurOptions
    from detectors.table import Features

    det = Blur(BlurOptions(**options))
    state = det.State()
    n = len(rows["t"])
    events = []
    for a in range(0, n, per_call):
        part = Features({k: v[a:a + per_call] for k, v in rows.items()})
        part["thumb_jpeg"] = np.array([b""] * len(part["t"]), dtype=object)
        events += det.process(state, "video", part)
    events += det.finish(state, float(rows["t"][-1] + rows["frame_dur"][-1]))
    return [Found("blur", e.start_s, e.end_s, "", e.details) for e in events]


def score(clips: list[corpus.Clip], rows: dict, options: dict) -> dict:
    tallies: dict[str, Tally] = {}
    for c in clips:
        score_clip(replace(c, truths=[t for t in c.truths if t.detector == "blur"]), replay(rows[c.name], options),
                   tallies)
    t = tallies.get("blur", Tally())
    return {"found": t.tp, "false_alarms": t.fp, "missed": t.fn,
            "end_error_s_max": round(max(map(abs, t.end_errors)), 2) if t.end_errors else None}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    candidates = [json.loads(a) for a in argv] or [{}, {"onset_s": 0}, {"recover_step": 0, "recover_share": 0},
                                                    {"recover_share": 0}, {"loss_threshold": 0.3}]
    sets = {"tune": [c for c in corpus.build() if c.split == "tune"]}
    sets.update({draw: extra_clips(draw) for draw in EXTRA_DRAWS})
    clips = [c for part in sets.values() for c in part]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = dict(zip([c.name for c in clips], pool.map(stage1_rows, [c.path for c in clips])))
    for options in candidates:
        print(json.dumps(options), "  ".join(f"{part}: {score(c, rows, options)}" for part, c in sets.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
