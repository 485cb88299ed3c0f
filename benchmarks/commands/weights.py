"""`vbench weights`: list the registry, print a cache path, verify a file, download a checkpoint."""

from __future__ import annotations

import json

import click

from visualsound import weights as W


@click.group("weights")
def weights() -> None:
    """Pretrained checkpoints: registry, cache paths, checksums, downloads."""


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def list_cmd(as_json: bool) -> None:
    """Every registry entry: name, file, size, licence, checksum, and whether it is in the cache."""
    if as_json:
        click.echo(json.dumps([W.entry_dict(n) for n in W.names()], indent=2))
        return
    click.echo(f"cache: {W.cache_dir() / 'weights'}")
    rows = [("name", "cached", "size", "licence", "checksum", "file")]
    problems = {}
    for n in W.names():
        e = W.get(n)
        checksum = (f"sha256 {e.sha256[:12]}..." if e.sha256 else
                    f"sha256 {e.sha256_prefix}..." if e.sha256_prefix else
                    f"md5 {e.md5_prefix}..." if e.md5_prefix else "not published")
        problem = W.cache_problem(n)
        if problem:
            problems[n] = problem
        rows.append((n, "BAD" if problem else "yes" if W.is_present(n) else "no", e.approx_size or "unknown",
                     e.licence.split(" (")[0] + ("*" if " (" in e.licence else ""), checksum, e.filename))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    click.echo("* licence has caveats; full licences, URLs and notes: `vbench weights info NAME`")
    for n, problem in problems.items():
        click.echo(f"BAD {n}: {W.download_path(n)} is {problem}.{W.damaged_file_hint(W.download_path(n))}", err=True)
    click.echo("cached files are checked against their checksums by `vbench weights verify NAME` (`list` only looks "
               "at their first bytes)")


@weights.command("path")
@click.argument("name")
def path_cmd(name: str) -> None:
    """Print where NAME is (or would be) cached."""
    click.echo(str(W.cache_path(name)))


@weights.command("info")
@click.argument("name")
def info_cmd(name: str) -> None:
    """Every field of NAME's entry, with its URL and notes."""
    for k, v in W.entry_dict(name).items():
        click.echo(f"{k}: {v}")


@weights.command("verify")
@click.argument("name")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Verify this file instead of the cached one.")
def verify_cmd(name: str, checkpoint: str | None) -> None:
    """Check NAME's file against its published (or recorded) checksum, and that it is the right kind of file; exit 2
    on a mismatch, with what to do."""
    r = W.verify(name, checkpoint)
    if r.checked:
        click.echo(f"ok  {name}  {r.path}  sha256 {r.sha256}  (checked: {r.method})")
    else:
        click.echo(f"unverified  {name}  {r.path}  sha256 {r.sha256}  (no published or recorded checksum)")


@weights.command("download")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete any cached copy and download again.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def download_cmd(name: str, force: bool, no_progress: bool) -> None:
    """Download NAME into the cache (atomic, checksum-verified, resumable) and print its path."""
    e = W.get(name)
    click.echo(f"{name}: {e.url}\nlicence: {e.licence}", err=True)
    click.echo(str(W.download(name, force=force, progress=not no_progress)))
