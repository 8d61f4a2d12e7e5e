"""Converter speed and bytes on the wire, against FFmpeg decode + scale on the same clip.

  ours    `avwatch publish CLIP` (decode, sample, scale, thumbnail, block-grid features, Arrow + zstd,
          Kafka produce with acks=all): frames per CPU second of the publisher process
  anchor  `ffmpeg -threads 1 -i CLIP -vf scale=320:180 -f null -`: the physical floor of decode + scale
Both decode the audio too. Targets: >= 0.8x FFmpeg's frames per CPU second; <= 1/100 of a raw 1080p
frame (1920x1080 8-bit 4:2:0 = 3,110,400 bytes) per analysed frame on the wire.
"""
from __future__ import annotations

import sys

from bench.common import bench_clip, ffmpeg, frame_count, run_timed
from jobs.kafka_io import read_all

RAW_1080P = 1920 * 1080 * 3 // 2


def run(bootstrap: str) -> dict:
    out = {}
    for height in (1080, 720):
        clip = bench_clip(height)
        frames = frame_count(clip)
        wall_ff, cpu_ff, proc = run_timed([ffmpeg(), "-v", "error", "-threads", "1", "-i", str(clip),
                                           "-vf", "scale=320:180", "-f", "null", "-"])
        assert proc.returncode == 0, proc.stderr
        topic = f"bench.conv{height}"
        wall, cpu, proc = run_timed([sys.executable, "-m", "avwatch.cli", "publish", str(clip), "--bootstrap", bootstrap,
                                     "--video-topic", f"{topic}.video", "--audio-topic", f"{topic}.audio",
                                     "--stream-id", f"conv{height}", "--no-progress"])
        assert proc.returncode == 0, proc.stderr
        records = read_all(bootstrap, [f"{topic}.video", f"{topic}.audio"])
        video_bytes = sum(len(r.value) for r in records if r.topic.endswith(".video"))
        audio_bytes = sum(len(r.value) for r in records if r.topic.endswith(".audio"))
        ours_fps = frames / cpu
        ff_fps = frames / cpu_ff
        out[f"{height}p"] = {
            "frames": frames, "publish_cpu_s": round(cpu, 2), "publish_wall_s": round(wall, 2),
            "publish_frames_per_cpu_s": round(ours_fps, 1), "ffmpeg_decode_scale_cpu_s": round(cpu_ff, 2),
            "ffmpeg_frames_per_cpu_s": round(ff_fps, 1), "ratio_vs_ffmpeg": round(ours_fps / ff_fps, 3),
            "video_bytes_per_frame": round(video_bytes / frames), "audio_bytes_per_frame": round(audio_bytes / frames),
            "bytes_per_frame_vs_raw_1080p": round(video_bytes / frames / RAW_1080P, 5),
            "all_bytes_per_frame_vs_raw_1080p": round((video_bytes + audio_bytes) / frames / RAW_1080P, 5)}
    return out
