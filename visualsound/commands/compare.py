"""`visualsound compare`: our VisualSound id lists against released ones (precision / recall / Jaccard)."""

from __future__ import annotations

import json

import click

from visualsound.report import compare_ids, markdown_table, read_split_lists


@click.command("compare")
@click.option("--ours", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder with visualsound_{train,validation,test}.txt (a `visualsound build` output).")
@click.option("--released", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder with the released lists (V-AURA's data/splits/visualsound).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def compare(ours: str, released: str, as_json: bool) -> None:
    """Per split: how many of our ids are released (precision), how many released ids we have (recall)."""
    table = compare_ids(read_split_lists(ours), read_split_lists(released))
    if as_json:
        click.echo(json.dumps(table.to_dict(orient="records"), indent=2))
    else:
        click.echo(markdown_table(table))
