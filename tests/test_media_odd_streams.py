"""Streams that are not what they seem, made with PyAV (`tests.odd_media`):

* an mp4 cut between keyframes with ``-c copy`` (an edit list; the leading packets are flagged discard and
  decoders drop their frames): `probe` counts and the ImageBind preprocessing samples only the frames that play.
"""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from tests.odd_media import cut_with_edit_list, read_barcode
from visualsound.imagebind.preprocess import preprocess_clip, read_clip
from visualsound.media import probe, read_video

CUT = 8  # frames the edit list skips
N = 75


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("odd_streams")
    files = {"cut.mp4": cut_with_edit_list(d / "cut.mp4", n=N, cut=CUT),
             "cut_bframes.mp4": cut_with_edit_list(d / "cut_bframes.mp4", n=N, cut=CUT, bframes=True)}
    return files


def _discarded(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(p.is_discard for p in c.demux(c.streams.video[0]) if p.size)


# ------------------------------------------------------------------------------ edit lists: discarded packets
@pytest.mark.parametrize("name", ["cut.mp4", "cut_bframes.mp4"])
def test_probe_counts_the_frames_an_edit_list_plays(media, name):
    path = media[name]
    assert _discarded(path) == CUT  # the class of input: leading packets flagged discard
    info = probe(path)
    assert info.num_frames == N - CUT == read_video(path, fps=None).shape[0]
    assert info.video_start == 0.0 and info.fps == 25.0


@pytest.mark.parametrize("name", ["cut.mp4", "cut_bframes.mp4"])
def test_imagebind_reads_a_clip_cut_between_keyframes(media, name):
    """`visualsound score` used to record such a clip as corrupt ("the decoder returned no frame for pts
    [-4096, ...]"): the discarded packets were counted as frames."""
    frames, waveform, facts = read_clip(media[name])
    shown = N - CUT
    assert facts["num_frames"] == shown and facts["duration"] == pytest.approx(shown / 25)
    for w, pair in enumerate(facts["video_frame_indices"]):
        # frame i of the clip is the i-th frame that plays: barcode CUT + i
        assert read_barcode(frames[w]) == [CUT + i for i in pair]
    assert waveform.shape[1] > 0
    video, audio, _ = preprocess_clip(media[name])
    assert tuple(video.shape) == (15, 3, 2, 224, 224) and tuple(audio.shape) == (3, 1, 128, 204)
