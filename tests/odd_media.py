"""Reproductions of the real-world media classes of issue #15, written with PyAV only (no sample files): H.264 in
MKV / WebM, VP9 with variable frame times, rotated and non-zero-start clips, MPEG-1 and raw H.264 elementary
streams (no container duration / no timestamps), an AVI with one undecodable AC-3 packet, Ogg video without an
average frame rate, odd frame sizes; and streams that are not what they seem: an mp4 cut between keyframes with
``-c copy`` (an edit list, leading packets flagged discard: `cut_with_edit_list`), audio files with cover art (an
``attached_pic`` video stream: `audio_with_cover`) and an mp4 whose first video stream is its cover
(`cover_stream_first`). Every frame carries a barcode of its index (`tests.test_media.barcode_frame`),
so a reader's output can be matched frame by frame with what was written."""

from __future__ import annotations

import base64
import io
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from tests.test_media import barcode_frame, read_barcode

__all__ = ["barcode_frame", "read_barcode", "encode", "frame_times", "corrupt_packet", "noise_clip", "png_bytes",
           "cut_with_edit_list", "audio_with_cover", "cover_stream_first"]


def encode(path: str | Path, *, codec: str = "libx264", fmt: str | None = None, n: int = 25, fps: int = 25,
           times: list[float] | None = None, size: tuple[int, int] = (64, 48), rotation: int | None = None,
           start: float = 0.0, audio: str | None = None, sample_rate: int = 48000, audio_seconds: float | None = None,
           bframes: bool = True, options: dict[str, str] | None = None,
           audio_start: float | None = None) -> list[float]:
    """Write `n` barcode frames (index ``i`` shown at ``start + times[i]``, default ``i / fps``) with `codec` into
    `path` (container `fmt`, default from the suffix; width at least 64), optionally with a tone in `audio`
    codec from `audio_start` (default: `start`). Returns the frame times written (seconds)."""
    uniform = times is None and abs(start * fps - round(start * fps)) < 1e-9
    times = [i / fps for i in range(n)] if times is None else list(times)
    w, h = size
    assert w >= 64, f"the barcode needs a width of at least 64, got {size}"
    tb = Fraction(1, fps) if uniform else Fraction(1, 1000)  # MPEG-1/2 encoders accept only frame-rate bases
    c = av.open(str(path), "w", format=fmt)
    try:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = tb
        opts = dict(options or {})
        if codec == "libx264":
            opts.setdefault("preset", "ultrafast")
            if bframes:
                opts.setdefault("bf", "2")
                opts["x264-params"] = "b-adapt=0:bframes=2:keyint=12:min-keyint=12:scenecut=0"
            opts.setdefault("crf", "10")
        if codec.startswith("libvpx"):
            opts.setdefault("deadline", "realtime")
            opts.setdefault("cpu-used", "8")
            opts.setdefault("crf", "10")
            opts.setdefault("b", "0")
        s.options = opts
        if rotation is not None:
            s.set_display_rotation(rotation)
        a = None
        if audio:
            a = c.add_stream(audio, rate=sample_rate)
            a.layout = "stereo"
        for i, t in enumerate(times):
            full = np.zeros((h, w, 3), np.uint8)
            full[:, :64] = barcode_frame(i, h=h, w=64)
            vf = av.VideoFrame.from_ndarray(full, format="rgb24")
            vf.pts = int(round((start + t) / tb))
            vf.time_base = tb
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
        if a is not None:
            seconds = audio_seconds if audio_seconds is not None else (times[-1] + 1 / fps)
            fs = a.codec_context.frame_size or 1024
            total = int(round(seconds * sample_rate))
            k = np.arange(total) / sample_rate
            tone = (0.3 * np.sin(2 * np.pi * 440 * k)).astype(np.float32)
            for i in range(0, total, fs):
                chunk = tone[i:i + fs]
                if len(chunk) < fs:
                    chunk = np.pad(chunk, (0, fs - len(chunk)))
                fr = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
                fr.sample_rate = sample_rate
                fr.pts = int(round((start if audio_start is None else audio_start) * sample_rate)) + i
                for pkt in a.encode(fr):
                    c.mux(pkt)
            for pkt in a.encode(None):
                c.mux(pkt)
    finally:
        c.close()
    return [start + t for t in times]


def frame_times(path: str | Path) -> list[tuple[float, int]]:
    """``(presentation time in seconds, barcode index)`` of every decoded frame, read straight with PyAV (frames
    without a timestamp get ``nan``)."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            rgb = f.to_ndarray(format="rgb24")
            idx = read_barcode(torch.from_numpy(np.ascontiguousarray(rgb[None, :, :64])))[0]
            out.append((float(f.time) if f.time is not None else float("nan"), idx))
    return out


def corrupt_packet(path: str | Path, kind: str, which: int, out: str | Path) -> float:
    """Copy `path` to `out` with the payload of the `which`-th packet of the first `kind` stream overwritten by
    garbage (the container stays intact). Returns that packet's time in seconds."""
    with av.open(str(path)) as c:
        pkts = [(p.pos, p.size, float(p.pts * p.time_base)) for p in c.demux(getattr(c.streams, kind)[0]) if p.size]
    pos, size, t = pkts[which]
    data = bytearray(Path(path).read_bytes())
    data[pos:pos + size] = bytes([0x55]) * size
    Path(out).write_bytes(bytes(data))
    return t


def noise_clip(path: Path, seconds: float, fps: float, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """A silent H.264 mp4 of seeded random frames (`size` is ``(height, width)``), for generation tests."""
    from visualsound.media import write_video

    n = int(round(seconds * fps))
    frames = np.random.default_rng(seed).integers(0, 255, (n, *size, 3)).astype(np.uint8)
    write_video(path, frames, fps)
    return path


def png_bytes(size: int = 16) -> bytes:
    """A small grey PNG (cover art), encoded with PyAV."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="image2pipe") as c:
        s = c.add_stream("png", rate=1)
        s.width = s.height = size
        s.pix_fmt = "rgb24"
        f = av.VideoFrame.from_ndarray(np.full((size, size, 3), 200, np.uint8), format="rgb24")
        f.pts = 0
        for pkt in [*s.encode(f), *s.encode(None)]:
            c.mux(pkt)
    return buf.getvalue()


def _add_cover(c: av.container.OutputContainer) -> av.video.stream.VideoStream:
    s = c.add_stream("png", rate=1)
    s.width = s.height = 16
    s.pix_fmt = "rgb24"
    s.disposition = av.stream.Disposition.attached_pic  # muxers write it as cover art (ID3 APIC, mp4 covr)
    return s


def _mux_cover(c: av.container.OutputContainer, s: av.video.stream.VideoStream) -> None:
    pkt = av.Packet(png_bytes())
    pkt.stream, pkt.pts, pkt.dts = s, 0, 0
    c.mux(pkt)


def cut_with_edit_list(path: str | Path, *, n: int = 75, cut: int = 8, bframes: bool = False) -> Path:
    """What ``ffmpeg -ss T -i src.mp4 -c copy cut.mp4`` writes for a `T` between keyframes: an H.264 + AAC mp4
    whose video packets start at the keyframe before the cut (barcode frame 0) with negative times, so that the
    mp4 muxer writes an edit list starting at frame `cut`; FFmpeg's demuxer flags the `cut` leading packets
    discard and decoders drop their frames (``n - cut`` frames play, barcodes ``cut`` ..). The source has one GOP
    (`bframes`: with two B-frames between references); the audio starts at the cut."""
    path = Path(path)
    src = path.with_name(path.stem + "_src.mp4")
    opts = {} if bframes else {"x264-params": f"keyint={n}:min-keyint={n}:scenecut=0"}
    encode(src, n=n, fps=25, audio="aac", sample_rate=44100, bframes=bframes, options=opts)
    if bframes:  # one GOP: a cut after frame 12 would land on a keyframe (odd_media's B-frame GOPs are 12 long)
        assert cut < 12
    with av.open(str(src)) as inp, av.open(str(path), "w", format="mp4") as out:
        vi, ai = inp.streams.video[0], inp.streams.audio[0]
        vo, ao = out.add_stream_from_template(vi), out.add_stream_from_template(ai)
        shift_v = round(Fraction(cut, 25) / vi.time_base)
        shift_a = round(Fraction(cut, 25) / ai.time_base)
        for pkt in inp.demux(vi, ai):
            if pkt.dts is None:
                continue
            if pkt.stream is vi:
                pkt.pts, pkt.dts, pkt.stream = pkt.pts - shift_v, pkt.dts - shift_v, vo
            else:
                if pkt.pts < shift_a:
                    continue
                pkt.pts, pkt.dts, pkt.stream = pkt.pts - shift_a, pkt.dts - shift_a, ao
            out.mux(pkt)
    src.unlink()
    return path


def _block_picture(data: bytes, mime: bytes = b"image/png", size: int = 16) -> str:
    """A FLAC picture block (front cover) in base64: the value of a Vorbis comment ``METADATA_BLOCK_PICTURE``."""
    block = (struct.pack(">II", 3, len(mime)) + mime + struct.pack(">IIIIII", 0, size, size, 24, 0, len(data))
             + data)
    return base64.b64encode(block).decode("ascii")


def audio_with_cover(path: str | Path, seconds: float = 1.0, sample_rate: int = 44100) -> Path:
    """An audio file with cover art, by suffix: ``.mp3`` (MP3 + an ID3 APIC picture), ``.m4a`` (AAC in mp4 + a
    ``covr`` picture) or ``.ogg`` (Vorbis + a ``METADATA_BLOCK_PICTURE`` comment). FFmpeg shows the picture as a
    video stream with the ``attached_pic`` disposition. A 440 Hz stereo tone of `seconds`."""
    path = Path(path)
    kind = path.suffix.lower()
    codec, fmt = {".mp3": ("libmp3lame", "mp3"), ".m4a": ("aac", "mp4"), ".ogg": ("vorbis", "ogg")}[kind]
    with av.open(str(path), "w", format=fmt) as c:
        a = c.add_stream(codec, rate=sample_rate)
        a.layout = "stereo"
        if kind == ".ogg":
            a.codec_context.options = {"strict": "experimental"}  # FFmpeg's own Vorbis encoder
            a.metadata["METADATA_BLOCK_PICTURE"] = _block_picture(png_bytes())
        else:
            _mux_cover(c, _add_cover(c))
        k = np.arange(int(round(seconds * sample_rate))) / sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * k)).astype(np.float32)
        fr = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        fr.sample_rate, fr.pts = sample_rate, 0
        for pkt in [*a.encode(fr), *a.encode(None)]:
            c.mux(pkt)
    return path


def cover_stream_first(path: str | Path, n: int = 25) -> Path:
    """An H.264 + AAC mp4 of `n` barcode frames with a PNG cover whose ``covr`` box comes before the tracks
    (``moov`` children reordered: ``udta`` right after ``mvhd``), so FFmpeg lists the cover as stream 0, the first
    video stream, and the real video as stream 1."""
    path = Path(path)
    src = path.with_name(path.stem + "_src.mp4")
    encode(src, n=n, audio="aac", sample_rate=44100)
    with av.open(str(src)) as inp, av.open(str(path), "w", format="mp4") as out:
        vi, ai = inp.streams.video[0], inp.streams.audio[0]
        vo, ao = out.add_stream_from_template(vi), out.add_stream_from_template(ai)
        _mux_cover(out, _add_cover(out))
        for pkt in inp.demux(vi, ai):
            if pkt.dts is None:
                continue
            pkt.stream = vo if pkt.stream is vi else ao
            out.mux(pkt)
    src.unlink()
    data = bytearray(path.read_bytes())
    pos = 0
    while True:  # the top-level moov box (box sizes fit 32 bits in these small files)
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"moov":
            break
        pos += size
    children, q = [], pos + 8
    while q < pos + size:
        n_bytes, kind = struct.unpack(">I4s", data[q:q + 8])
        children.append((kind, bytes(data[q:q + n_bytes])))
        q += n_bytes
    assert b"udta" in [k for k, _ in children], "the mp4 muxer wrote no cover"
    children.sort(key=lambda c: {b"mvhd": 0, b"udta": 1}.get(c[0], 2))  # stable: the tracks keep their order
    data[pos + 8:pos + size] = b"".join(b for _, b in children)  # same size: sample offsets stay valid
    path.write_bytes(bytes(data))
    return path
