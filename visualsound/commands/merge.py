"""`visualsound merge`: combine score folders (e.g. `visualsound score --shard i/n` outputs) into one file."""

from __future__ import annotations

import click

from visualsound.scores_io import merge_scores


@click.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder; receives scores-merged.parquet (replaced atomically).")
def merge(sources: tuple[str, ...], out_dir: str) -> None:
    """Merge the shards of SOURCES (folders or Parquet files), resolving duplicated clips deterministically."""
    s = merge_scores(sources, out_dir)
    counts = s.frame["status"].value_counts().to_dict()
    click.echo(f"merged {len(s.shards)} shards: {len(s.frame)} clips ({s.duplicates} duplicates resolved), "
               f"status {counts} -> {out_dir}/scores-merged.parquet")
