"""Stage 1 in one import, for the code that runs it (the stream job, the converter's --edge-features, the
local runner, tests, benchmarks). Each name lives in the module of its role:

- detectors/table.py     Features, the feature table type
- detectors/segments.py  segment decoding: VideoFrames, AudioBlocks, decode_video, decode_audio
- detectors/compose.py   the stage-1 composer: stage1, SegmentInput, video/audio_features, check_features
- detectors/wire.py      the wire format: to_ipc, from_ipc
"""
from detectors.compose import (SHARED_OUTPUTS, SegmentInput, audio_features, check_features, compose_audio,
                               compose_video, edge_features_table, expected_columns, outputs, stage1,
                               video_features)
from detectors.segments import AUDIO_BLOCK_S, AudioBlocks, VideoFrames, decode_audio, decode_thumb, decode_video
from detectors.table import Features
from detectors.wire import from_ipc, to_ipc

__all__ = ["AUDIO_BLOCK_S", "AudioBlocks", "Features", "SHARED_OUTPUTS", "SegmentInput", "VideoFrames",
           "audio_features", "check_features", "compose_audio", "compose_video", "decode_audio", "decode_thumb",
           "decode_video", "edge_features_table", "expected_columns", "from_ipc", "outputs", "stage1", "to_ipc",
           "video_features"]
