"""`visualsound probe`: container, video and audio facts of media files (or a typed error per file)."""

from __future__ import annotations

import json

import click


@click.command("probe")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option("--require-video", is_flag=True, help="Fail files without a video stream.")
@click.option("--require-audio", is_flag=True, help="Fail files without an audio stream.")
@click.pass_context
def probe(ctx: click.Context, paths: tuple[str, ...], as_json: bool, require_video: bool,
          require_audio: bool) -> None:
    """Report duration, fps, size (with the pixel aspect ratio when not square), frame count, rotation, sample
    rate, channels and samples of PATHS.

    Every file is reported; a file that cannot be probed gets its error type and message. Exit code 2 when any
    file failed.
    """
    from visualsound.media import MediaError
    from visualsound.media import probe as probe_file

    failed = 0
    for path in paths:
        try:
            info = probe_file(path, require_video=require_video, require_audio=require_audio)
        except MediaError as e:
            failed += 1
            if as_json:
                click.echo(json.dumps({"path": path, "error": type(e).__name__, "message": str(e)}))
            else:
                click.echo(f"{path}: {type(e).__name__}: {e}")
            continue
        if as_json:
            click.echo(json.dumps(info.to_dict()))
            continue
        parts = [f"{info.duration:.3f} s"]
        if info.has_video:
            fps = f"{info.fps:.3f} fps" if info.fps is not None else "unknown fps"
            sar = "" if info.sample_aspect_ratio == "1:1" else f" SAR {info.sample_aspect_ratio}"
            parts.append(f"video {info.video_codec} {info.width}x{info.height}{sar} {fps} "
                         f"{info.num_frames} frames rotation {info.rotation}")
        else:
            parts.append("no video (only a cover picture)" if info.cover_picture else "no video")
        if info.has_audio:
            parts.append(f"audio {info.audio_codec} {info.sample_rate} Hz x{info.channels} {info.num_samples} samples")
        else:
            parts.append("no audio")
        click.echo(f"{path}: " + ", ".join(parts))
    if failed:
        ctx.exit(2)
