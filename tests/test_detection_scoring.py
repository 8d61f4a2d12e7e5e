"""The field corpus's scorer (bench/detection_quality.py, pure code): a truth under the coding's own change is
scored like any other, and reported beside the score."""
import numpy as np

from bench.detection_quality import Found, summary
from bench.field_corpus import Clip, Truth, luma_psnr


def clip(name, *truths):
    return Clip(name, 0, "held_out", "blur", f"/nowhere/{name}.mp4", 12.0, (1280, 720), ["fill"], list(truths))


def test_a_truth_below_the_coding_counts_as_missed_and_is_reported_beside_the_score():
    seen = Truth("blur", 4.0, 6.0, "sigma5", change_psnr_db=30.0, coding_psnr_db=45.0)
    unseen = Truth("blur", 4.0, 6.0, "sigma2", change_psnr_db=46.0, coding_psnr_db=45.0)
    missed_seen = Truth("blur", 4.0, 6.0, "sigma2", change_psnr_db=40.0, coding_psnr_db=45.0)
    clips = [clip("a", seen), clip("b", unseen), clip("c", missed_seen)]
    out = summary(clips, {"a": [Found("blur", 4.0, 6.0)], "b": [], "c": []})
    blur = out["per_detector"]["blur"]
    assert (blur["tp"], blur["fn"], blur["f1"]) == (1, 2, 0.5)       # the score keeps every truth
    assert blur["missed_below_coding"] == 1 and blur["found_below_coding"] == 0
    assert blur["f1_without_below_coding"] == round(2 / 3, 3)          # 1 found, 1 missed of those one can see
    assert out["macro_f1"] == 0.5 and out["macro_f1_without_below_coding"] == round(2 / 3, 3)
    assert unseen.below_coding and not seen.below_coding
    assert not Truth("blockiness", 1.0, 2.0, "bytes").below_coding    # unmeasured: never below


def test_luma_psnr_is_99_for_equal_pictures_and_falls_with_the_change():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    c = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    assert luma_psnr([a], [a]) == 99.0
    assert 99.0 > luma_psnr([a], [b]) > luma_psnr([a], [c]) > 10.0
