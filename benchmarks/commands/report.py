"""`vbench report`: the listening report (leaderboard, per-item distributions, a gallery of clips with every
model's audio) of result files, as one folder that opens from disk."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report folder (index.html, media/, plots/, report.json); a previous report is updated.")
@click.option("--select", "select_terms", multiple=True, metavar="SPEC",
              help="Gallery clips: ids:A,B | worst:METRIC:N[:MODEL] | best:METRIC:N[:MODEL] | random:N "
                   "(repeatable: their union). Default: every clip up to 50, else the worst and best few per "
                   "metric plus a random sample, 50 in all.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random:N and the default sample.")
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which generated sample of each clip the gallery plays (and shows the metrics of).")
@click.option("--width", type=click.IntRange(min=32), default=320, show_default=True,
              help="Width in pixels of re-encoded gallery videos and of the posters (smaller videos keep their "
                   "size; copied windows keep the source's).")
@click.option("--copy-kbps", type=click.FloatRange(min=0), default=800, show_default=True,
              help="A ground-truth window of H.264 at most this many kbit/s that starts on a keyframe is copied "
                   "from its source (fast, the source's size and frame rate); others are re-encoded small. "
                   "0: re-encode every one (the smallest folder).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Clips made at once, in worker processes when 12 or more need making (default: one per "
                   "available core).")
@click.option("--media-cache", type=click.Path(file_okay=False), default=None,
              help="Folder of media shared between reports: a clip or model track made for any earlier report is "
                   "linked in, not encoded again (hard links on the same file system). Default: "
                   "$VAURA_CACHE_DIR/report-media.")
@click.option("--no-media-cache", is_flag=True, help="Encode into this report's folder only.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def report(results: tuple[str, ...], out: str, select_terms: tuple[str, ...], seed: int, sample: int, width: int,
           copy_kbps: float, jobs: int | None, media_cache: str | None, no_media_cache: bool,
           no_progress: bool) -> None:
    """Build the listening report of RESULTS (result JSON files or folders of them; each needs its per-clip
    table) in --out. Open OUT/index.html in a browser: no server and no network needed."""
    from benchmarks.report import build_report
    from benchmarks.report_media import MediaSettings
    from visualsound.errors import ConfigError
    from visualsound.weights import cache_dir

    if no_media_cache and media_cache:
        raise ConfigError("--media-cache and --no-media-cache contradict each other; give one")
    store = None if no_media_cache else (media_cache or cache_dir() / "report-media")
    summary = build_report(results, out, select_terms, seed=seed, sample=sample,
                           settings=MediaSettings(width=width - width % 2, copy_kbps=copy_kbps),
                           progress=not no_progress, jobs=jobs, media_store=store)
    shared = f", {summary.from_store} taken from the media cache {store}" if store is not None else ""
    made = (f"; ground-truth videos: {summary.copied} copied, {summary.reencoded} re-encoded"
            if summary.copied or summary.reencoded else "")
    click.echo(f"report -> {summary.index} ({summary.clips} clips, {summary.encoded} media files written{shared}, "
               f"{summary.removed} stale files removed, {summary.seconds:.1f} s{made})")
    for msg in summary.errors:
        click.echo(f"  media problem: {msg}", err=True)
