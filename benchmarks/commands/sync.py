"""`vbench sync VIDEO`: Synchformer's audio-visual offset of one clip (21 classes from -2.0 s to +2.0 s)."""

from __future__ import annotations

import json

import click

from visualsound.utils.cli import weights_options


@click.command("sync")
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--audio", "audio_path", type=click.Path(dir_okay=False), default=None,
              help="Take the audio from this file instead of VIDEO's audio stream.")
@weights_options({"synchformer_audioset": ("--checkpoint", "Synchformer <ID>.pt or bare state dict")}, exists=False,
                 dir_okay=False)
@click.option("--debug-weights", is_flag=True, help="Seeded random tiny model (tests/demo; results are meaningless).")
@click.option("--protocol", type=click.Choice(["paper", "av-benchmark"]), default="paper", show_default=True,
              help="paper: one 4.8 s window of the first 5 s (short clips are looped); av-benchmark: DeSync as "
                   "`vbench evaluate --protocol av-benchmark` computes it: the first and last 4.8 s of the first "
                   "8 s (needs 8 s of video and audio).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def sync(video: str, audio_path: str | None, weights: dict[str, str | None], debug_weights: bool, protocol: str,
         device: str, as_json: bool) -> None:
    """Predict the audio-visual offset of VIDEO and show the three most likely offsets."""
    from vaura.synchformer.api import CLIP_SECONDS, load_sync_model, predict_offset
    from vaura.synchformer.preprocess import FPS, SAMPLE_RATE
    from visualsound.media import read_audio, read_video

    model = load_sync_model(checkpoint=weights["synchformer_audioset"], debug_weights=debug_weights, device=device)
    if protocol == "paper":
        frames = read_video(video, duration=CLIP_SECONDS, fps=FPS)  # the paper protocol never reads past 5 s
        wave = read_audio(audio_path or video, duration=CLIP_SECONDS, sample_rate=SAMPLE_RATE, mono=True)
        pred = predict_offset(model, frames, wave, protocol=protocol)
        starts, offsets, offset, desync = pred.window_starts_sec, pred.window_offsets_sec, pred.offset_sec, None
        top = pred.top(3)
    else:
        from benchmarks.protocols.avbench.protocol import clip_desync

        pred_av = clip_desync(model, video, audio_path)
        starts, offsets = list(pred_av.window_starts_sec), list(pred_av.offsets_sec)
        offset, desync = sum(offsets) / len(offsets), pred_av.desync_sec
        top = pred_av.top(3)
    if as_json:
        click.echo(json.dumps({
            "video": video, "audio": audio_path or video, "protocol": protocol, "debug_weights": debug_weights,
            "offset_sec": round(offset, 4), "window_starts_sec": [round(s, 4) for s in starts],
            "window_offsets_sec": [round(s, 4) for s in offsets],
            "desync_sec": round(desync if desync is not None else sum(abs(o) for o in offsets) / len(offsets), 4),
            "top3": [{"offset_sec": round(o, 4), "prob": round(p, 6)} for o, p in top]}))
        return
    if debug_weights:
        click.echo("DEBUG WEIGHTS: seeded random tiny model, the offsets below are meaningless")
    windows = ", ".join(f"{s:.2f} s -> {o:+.1f} s" for s, o in zip(starts, offsets))
    click.echo(f"{video} ({protocol} protocol; windows: {windows})")
    click.echo(f"predicted offset: {offset:+.2f} s (audio relative to video)"
               + (f"; DeSync {desync:.3f} s" if desync is not None else ""))
    click.echo("top 3:")
    for o, prob in top:
        click.echo(f"  {o:+.1f} s  p={prob:.4f}")
