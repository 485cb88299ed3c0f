"""Weights registry: cache paths, missing-file messages, verified/atomic/resumable downloads from a local HTTP
server (never the network), safe archive extraction, `vbench weights`, and NOTICE kept in sync."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading

import pytest
import torch
from click.testing import CliRunner

from tests.conftest import REPO_ROOT
from visualsound import weights as W

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files[path]``; honours Range; ``/cut/...`` announces the full length but stops halfway."""

    files: dict[str, bytes] = {}
    requests: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        cut = self.path.startswith("/cut/")
        key = self.path[4:] if cut else self.path
        type(self).requests.append({"path": self.path, "range": self.headers.get("Range")})
        if key not in self.files:
            self.send_error(404)
            return
        data = self.files[key]
        start = 0
        rng = self.headers.get("Range")
        if rng and not cut:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):  # RFC 9110: range not satisfiable, with the full size
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        self.wfile.write(body[: len(body) // 2] if cut else body)
        self.wfile.flush()
        if cut:
            self.close_connection = True


@pytest.fixture
def server():
    _Handler.files = {}
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAURA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entry(monkeypatch, url: str, **kw) -> W.WeightsEntry:
    fields = dict(name="test_entry", filename="test.bin", url=url, licence="MIT", source="test",
                  contents="test payload")
    fields.update(kw)
    e = W.WeightsEntry(**fields)
    monkeypatch.setitem(W.REGISTRY, e.name, e)
    return e


def test_registry_names_and_urls():
    expected = {"imagebind_huge", "synchformer_audioset", "synchformer_vggsound", "synchformer_lrs3",
                "avclip_vggsound", "avclip_audioset", "vaura_release", "dac_44khz", "vggish", "passt",
                "panns_cnn14_16k"}
    assert set(W.names()) == expected
    for e in W.REGISTRY.values():
        assert e.url.startswith("https://"), e
        assert e.licence and e.source and e.contents
        assert e.sha256 is None or len(e.sha256) == 64
    assert W.get("vaura_release").archive
    assert "24-08-01T08-34-26" in W.get("vaura_release").url
    assert W.get("imagebind_huge").url == "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"


def test_cache_dir_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("VAURA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cache_dir() == tmp_path / "xdg" / "vaura-toolkit"
    monkeypatch.setenv("VAURA_CACHE_DIR", str(tmp_path / "mine"))
    assert W.cache_path("passt") == tmp_path / "mine" / "weights" / "passt-s-f128-p16-s10-ap.476-swa.pt"


def test_missing_file_message_names_url_path_checksum_and_command(cache):
    with pytest.raises(W.WeightsNotFoundError) as ei:
        W.resolve("vggish")
    msg = str(ei.value)
    e = W.get("vggish")
    assert e.url in msg and str(W.download_path("vggish")) in msg
    assert "vbench weights download vggish" in msg and "sha256 not published" in msg
    with pytest.raises(W.WeightsNotFoundError, match="md5 prefix 54037d2"):
        W.resolve("synchformer_audioset")
    with pytest.raises(W.WeightsNotFoundError, match="given explicitly"):
        W.resolve("vggish", cache / "nope.pth")
    with pytest.raises(W.UnknownWeightsError, match="imagebind_huge"):
        W.resolve("no_such_model")


def test_archive_resolves_to_extracted_folder(cache):
    assert W.cache_path("vaura_release") == cache / "weights" / "24-08-01T08-34-26"
    W.download_path("vaura_release").parent.mkdir(parents=True)
    W.download_path("vaura_release").write_bytes(b"not an archive")  # e.g. an error page saved in its place
    with pytest.raises(W.ChecksumMismatchError, match="is a text file, not a gzip-compressed tar archive") as err:
        W.resolve("vaura_release")
    assert "vbench weights download vaura_release --force" in str(err.value) and W.get("vaura_release").url in str(
        err.value)
    assert not W.cache_path("vaura_release").exists()


def test_a_placed_archive_is_extracted_on_use(cache, monkeypatch, caplog):
    """The missing-weights message says to place the tar.gz at a path; a placed archive is then checked and
    extracted by the first command that needs it (it used to say "present but not extracted; the command extracts
    it", and no command but `vbench weights download` did)."""
    data = _tar({"exp1/checkpoints/last.ckpt": b"ckpt", "exp1/hparams.yaml": b"a: 1\n"})
    _entry(monkeypatch, "https://example.invalid/exp1.tar.gz", filename="exp1.tar.gz", archive=True,
           extract_dir="exp1", sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(W.WeightsNotFoundError) as err:
        W.resolve("test_entry")
    msg = str(err.value)
    assert f"place it at {W.download_path('test_entry')}" in msg and "extracted on first use" in msg
    W.download_path("test_entry").parent.mkdir(parents=True)
    W.download_path("test_entry").write_bytes(data)
    assert W.is_present("test_entry") and not W.cache_path("test_entry").exists()
    with caplog.at_level("WARNING", logger="visualsound.weights"):
        out = W.resolve("test_entry")
    assert out == cache / "weights" / "exp1" and (out / "checkpoints" / "last.ckpt").read_bytes() == b"ckpt"
    assert "extracting" in caplog.text and "published sha256" in caplog.text
    assert sorted(p.name for p in (cache / "weights").iterdir()) == ["exp1", "exp1.tar.gz"]  # no temporary folder
    assert W.resolve("test_entry") == out  # once
    # a placed archive that fails its checksum, or a damaged one, is refused with what to do, never extracted
    import shutil

    shutil.rmtree(out)
    W.download_path("test_entry").write_bytes(data[:20] + bytes([data[20] ^ 1]) + data[21:])
    with pytest.raises(W.ChecksumMismatchError, match="test_entry --force"):
        W.resolve("test_entry")
    _entry(monkeypatch, "https://example.invalid/exp1.tar.gz", filename="exp1.tar.gz", archive=True,
           extract_dir="exp1")  # no digest: only the archive itself can tell
    W.download_path("test_entry").write_bytes(data[: len(data) // 2])
    with pytest.raises(W.WeightsError, match="not a readable tar archive .* --force"):
        W.resolve("test_entry")
    assert sorted(p.name for p in (cache / "weights").iterdir()) == ["exp1.tar.gz"]
    # another process that finishes the extraction first wins the race
    W.download_path("test_entry").write_bytes(data)

    def beaten(archive, dest):
        (dest / "checkpoints").mkdir(parents=True)
        raise W.WeightsError(f"extraction target {dest} already exists")

    monkeypatch.setattr(W, "extract_archive", beaten)
    assert W.resolve("test_entry") == cache / "weights" / "exp1"


def test_missing_weights_name_the_running_commands_option(cache):
    """Every message ended "Or pass --checkpoint PATH", although e.g. `vbench evaluate` takes VGGish's path as
    --vggish-checkpoint and refuses --checkpoint for non-vaura models."""
    with pytest.raises(W.WeightsNotFoundError) as err:
        W.resolve("vggish")
    assert "--checkpoint" not in str(err.value) and "checkpoint argument" in str(err.value)
    with W.command_options({"vggish": "--vggish-checkpoint", "dac_44khz": "--codec-checkpoint"}):
        with pytest.raises(W.WeightsNotFoundError, match="Or pass --vggish-checkpoint PATH"):
            W.resolve("vggish")
        with pytest.raises(W.WeightsNotFoundError, match="Or pass --codec-checkpoint PATH"):
            W.resolve("dac_44khz")
        with pytest.raises(W.WeightsNotFoundError, match="This command takes no path for it: it reads the cache"):
            W.resolve("passt")
        with pytest.raises(W.WeightsNotFoundError, match="given explicitly with --vggish-checkpoint"):
            W.resolve("vggish", cache / "nope.pth")
        with pytest.raises(W.WeightsNotFoundError) as err:
            W.require({"vggish": None, "dac_44khz": cache / "nope.pth", "passt": None}, "this job needs")
    msg = str(err.value)
    assert msg.startswith("3 weights files this job needs are missing (nothing was run):")
    assert W.get("vggish").url in msg and str(W.download_path("passt")) in msg and "--vggish-checkpoint PATH" in msg
    assert f"dac_44khz: {cache / 'nope.pth'} (given with --codec-checkpoint) does not exist" in msg
    assert W.option_for("vggish") is None  # only while the command runs


#: every CLI command that loads pretrained weights: registry name -> the option that takes its path. Users' scripts
#: use these option names: a change here is a change of the command line.
COMMAND_WEIGHTS_OPTIONS = {
    ("visualsound", "score"): {"imagebind_huge": "--checkpoint"},
    ("vaura", "extract"): {"avclip_vggsound": "--checkpoint", "dac_44khz": "--codec-checkpoint"},
    ("vaura", "train"): {"avclip_vggsound": "--checkpoint", "dac_44khz": "--codec-checkpoint"},
    ("vaura", "generate"): {"vaura_release": "--checkpoint", "avclip_vggsound": "--visual-checkpoint",
                            "dac_44khz": "--codec-checkpoint"},
    ("vaura", "sync-filter"): {"synchformer_vggsound": "--checkpoint", "synchformer_audioset": "--checkpoint",
                               "synchformer_lrs3": "--checkpoint"},
    ("vbench", "sync"): {"synchformer_audioset": "--checkpoint"},
    ("vbench", "evaluate"): {"vaura_release": "--checkpoint", "vggish": "--vggish-checkpoint",
                             "passt": "--passt-checkpoint", "panns_cnn14_16k": "--panns-checkpoint",
                             "imagebind_huge": "--imagebind-checkpoint", "synchformer_audioset": "--sync-checkpoint"},
}
#: options named like a weights path that are not one: `vbench weights verify NAME --checkpoint FILE` checks any file
NOT_WEIGHTS_PATHS = {("vbench", "weights verify", "--checkpoint")}


def _cli_commands():
    """(cli, command path, click command) of every command of the three CLIs, subcommands of groups included."""
    import click

    from benchmarks.cli import main as vbench
    from vaura.cli import main as vaura
    from visualsound.cli import main as visualsound

    def walk(cli, group, prefix):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if isinstance(cmd, click.Group):
                yield from walk(cli, cmd, f"{prefix}{name} ")
            else:
                yield cli, f"{prefix}{name}", cmd

    for cli, group in (("visualsound", visualsound), ("vaura", vaura), ("vbench", vbench)):
        yield from walk(cli, group, "")


def test_every_commands_weights_options_are_its_own_options():
    """Each command's weights table (`weights_options`) names options the command really has, for registry entries
    that exist; every weights path option of a command is in its table (none declared by hand beside it); the
    tables are the documented command line; and every command with --debug-weights that loads a model has one."""
    from click.testing import CliRunner

    from visualsound.utils.cli import command_weights_options

    seen, problems = {}, []
    for cli, path, cmd in _cli_commands():
        table = command_weights_options(cmd)
        options = {opt: p for p in cmd.params for opt in p.opts}
        for name, option in table.items():
            if name not in W.REGISTRY:
                problems.append(f"{cli} {path}: {name!r} is not a registry entry")
            if option not in options:
                problems.append(f"{cli} {path}: {option} (for {name}) is not an option of the command")
        for option in options:
            if "checkpoint" in option and option not in table.values() and (cli, path, option) not in NOT_WEIGHTS_PATHS:
                problems.append(f"{cli} {path}: {option} is not in its weights table")
        if table:
            seen[(cli, path)] = table
            res = CliRunner().invoke(cmd, ["--help"], terminal_width=200)
            problems += [f"{cli} {path}: --help does not list {o}" for o in table.values() if o not in res.output]
    assert not problems, problems
    assert seen == COMMAND_WEIGHTS_OPTIONS


class _Stop(Exception):
    pass


@pytest.mark.parametrize("key", sorted(COMMAND_WEIGHTS_OPTIONS))
def test_each_commands_missing_weights_messages_name_its_own_options(key, cache, tmp_path, monkeypatch):
    """While each command runs, the missing-weights message of every registry entry it loads names the command's own
    option for it, a given path that does not exist too; an entry it has no option for says it reads the cache
    only."""
    import contextlib

    from benchmarks.cli import main as vbench
    from vaura.cli import main as vaura
    from visualsound.cli import main as visualsound

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    args = {"score": ["--videos", str(tmp_path), "--out", str(tmp_path / "o")],
            "extract": ["--data", str(tmp_path), "--out", str(tmp_path / "o")],
            "train": ["--data", str(tmp_path), "--out", str(tmp_path / "o")],
            "generate": ["--video", str(video), "--out", str(tmp_path / "o.mp4")],
            "sync-filter": ["--videos", str(tmp_path), "--out", str(tmp_path / "o")],
            "sync": [str(video)], "evaluate": ["--model", "vaura", "--dataset", "x"]}[key[1]]
    main = {"visualsound": visualsound, "vaura": vaura, "vbench": vbench}[key[0]]
    recorded = []
    real = W.command_options

    @contextlib.contextmanager
    def record(options):
        recorded.append(dict(options))
        with real(options):
            messages = {}
            for name in W.REGISTRY:
                for path in (None, tmp_path / "nope.pth"):
                    with pytest.raises(W.WeightsNotFoundError) as err:
                        W.resolve(name, path)
                    messages[name, path is None] = str(err.value)
            recorded.append(messages)
        raise _Stop  # the command itself does not run

    monkeypatch.setattr(W, "command_options", record)
    res = CliRunner().invoke(main, [key[1], *args])
    assert isinstance(res.exception, _Stop), res.output
    table, messages = recorded
    assert table == COMMAND_WEIGHTS_OPTIONS[key]
    for name in W.REGISTRY:
        if name in table:
            assert f"Or pass {table[name]} PATH" in messages[name, True], (name, messages[name, True])
            assert f"(given explicitly with {table[name]})" in messages[name, False]
        else:
            assert "This command takes no path for it: it reads the cache only" in messages[name, True]
            assert "given explicitly)" in messages[name, False]


def test_cli_commands_name_their_own_weights_options(cache, tmp_path):
    """End to end with an empty cache: the first weights file each command loads is missing."""
    from benchmarks.cli import main as vbench
    from vaura.cli import main as vaura
    from visualsound.cli import main as visualsound

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    res = CliRunner().invoke(vbench, ["sync", str(video)])
    assert res.exit_code == 2 and "Or pass --checkpoint PATH" in res.output, res.output
    res = CliRunner().invoke(vbench, ["sync", str(video), "--checkpoint", str(tmp_path / "nope.pt")])
    assert res.exit_code == 2 and "(given explicitly with --checkpoint)" in res.output, res.output
    res = CliRunner().invoke(vaura, ["extract", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "'avclip_vggsound'" in res.output and "Or pass --checkpoint PATH" in res.output
    res = CliRunner().invoke(vaura, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "'avclip_vggsound'" in res.output and "Or pass --checkpoint PATH" in res.output
    res = CliRunner().invoke(vaura, ["generate", "--video", str(video), "--out", str(tmp_path / "o.mp4")])
    assert res.exit_code == 2 and "'vaura_release'" in res.output and "Or pass --checkpoint PATH" in res.output
    res = CliRunner().invoke(visualsound, ["score", "--videos", str(tmp_path), "--out", str(tmp_path / "s"),
                                           "--workers", "0", "--no-progress"])
    assert res.exit_code == 2 and "'imagebind_huge'" in res.output and "Or pass --checkpoint PATH" in res.output
    for weights in ("synchformer_vggsound", "synchformer_lrs3"):  # one --checkpoint for the entry --weights picks
        res = CliRunner().invoke(vaura, ["sync-filter", "--videos", str(tmp_path), "--out", str(tmp_path / "f"),
                                         "--split", "test", "--workers", "0", "--no-progress", "--weights", weights])
        assert res.exit_code == 2 and f"download {weights}`" in res.output, res.output
        assert "Or pass --checkpoint PATH" in res.output, res.output


def test_a_damaged_cached_file_says_to_delete_and_download_again(cache, server, monkeypatch):
    """A text file at .../weights/vggish-10086976.pth gave "is not a readable torch checkpoint: it looks like a
    text file" without a remedy, and `vbench weights list` showed it as cached."""
    from benchmarks.cli import main
    from benchmarks.metrics.vggish import load_vggish
    from visualsound.errors import CheckpointError

    path = W.download_path("vggish")
    path.parent.mkdir(parents=True)
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(CheckpointError) as err:
        load_vggish()
    msg = str(err.value)
    assert "looks like a text file" in msg and "vbench weights download vggish --force" in msg
    assert W.get("vggish").url in msg and "\n" not in msg
    runner = CliRunner()
    res = runner.invoke(main, ["weights", "list"])
    assert res.exit_code == 0 and re.search(r"^vggish +BAD ", res.output, re.M), res.output
    assert "BAD vggish:" in res.output and "--force" in res.output
    assert json.loads(runner.invoke(main, ["weights", "list", "--json"]).output)[8]["problem"] == "a text file"
    res = runner.invoke(main, ["weights", "verify", "vggish"])
    assert res.exit_code == 2 and "a text file, not a torch checkpoint" in res.output and "--force" in res.output
    res = runner.invoke(main, ["weights", "download", "vggish", "--no-progress"])
    assert res.exit_code == 2 and "--force" in res.output  # never taken for a good copy
    good = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, good)
    _Handler.files["/vggish.pth"] = good.getvalue()
    monkeypatch.setitem(W.REGISTRY, "vggish", dataclasses.replace(W.get("vggish"), url=f"{server}/vggish.pth"))
    res = runner.invoke(main, ["weights", "download", "vggish", "--force", "--no-progress"])
    assert res.exit_code == 0 and path.read_bytes() == good.getvalue(), res.output
    assert W.cache_problem("vggish") is None


def test_resolve_explicit_and_cached(cache, tmp_path):
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert W.resolve("passt", f) == f
    W.download_path("passt").parent.mkdir(parents=True)
    W.download_path("passt").write_bytes(b"y")
    assert W.resolve("passt") == W.download_path("passt")


def test_download_from_local_server_verifies_sha256(cache, server, monkeypatch):
    _Handler.files["/w.bin"] = PAYLOAD
    _entry(monkeypatch, f"{server}/w.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    path = W.download("test_entry", progress=False)
    assert path == cache / "weights" / "test.bin"
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name("test.bin.partial").exists()
    assert W.verify("test_entry").checked
    # a second call verifies the cached file instead of downloading again
    n = len(_Handler.requests)
    W.download("test_entry", progress=False)
    assert len(_Handler.requests) == n


def test_checksum_mismatch_is_refused_and_not_kept(cache, server, monkeypatch):
    _Handler.files["/w.bin"] = PAYLOAD
    _entry(monkeypatch, f"{server}/w.bin", sha256="0" * 64)
    with pytest.raises(W.ChecksumMismatchError, match="refused"):
        W.download("test_entry", progress=False)
    assert list((cache / "weights").iterdir()) == []
    with pytest.raises(W.WeightsNotFoundError):
        W.resolve("test_entry")


def test_prefix_checks_and_recorded_digest(cache, server, monkeypatch, tmp_path):
    _Handler.files["/w.bin"] = PAYLOAD
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    _entry(monkeypatch, f"{server}/w.bin", sha256_prefix=sha[:8], md5_prefix=md5[:7])
    path = W.download("test_entry", progress=False)
    assert path.with_name("test.bin.sha256").read_text().split()[0] == sha
    assert "recorded sha256" in W.verify("test_entry").method
    path.write_bytes(PAYLOAD[:-1] + b"\x00")  # corrupted later
    with pytest.raises(W.ChecksumMismatchError):
        W.verify("test_entry")
    other = tmp_path / "other.bin"
    other.write_bytes(b"not it")
    with pytest.raises(W.ChecksumMismatchError, match="md5 prefix|sha256 prefix"):
        W.verify("test_entry", other)


def test_interrupted_download_leaves_no_final_file_then_resumes(cache, server, monkeypatch):
    _Handler.files["/w.bin"] = PAYLOAD
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    _entry(monkeypatch, f"{server}/cut/w.bin", sha256=sha)
    with pytest.raises(W.DownloadError, match="resume"):
        W.download("test_entry", progress=False)
    final = cache / "weights" / "test.bin"
    partial = final.with_name("test.bin.partial")
    assert not final.exists()
    assert 0 < partial.stat().st_size < len(PAYLOAD)
    with pytest.raises(W.WeightsNotFoundError):
        W.resolve("test_entry")
    # the server works again: the next call resumes with a Range request from the partial size
    _entry(monkeypatch, f"{server}/w.bin", sha256=sha)
    size = partial.stat().st_size
    assert W.download("test_entry", progress=False).read_bytes() == PAYLOAD
    assert _Handler.requests[-1]["range"] == f"bytes={size}-"
    assert not partial.exists()
    # a partial that already holds the whole file (416 with the same size) is verified and kept; a longer one
    # (the file changed upstream) is deleted with a clear error, never accepted
    final.unlink()
    partial.write_bytes(PAYLOAD)
    assert W.download("test_entry", progress=False).read_bytes() == PAYLOAD
    assert _Handler.requests[-1]["range"] == f"bytes={len(PAYLOAD)}-"
    final.unlink()
    partial.write_bytes(PAYLOAD + b"junk")
    with pytest.raises(W.DownloadError, match="does not match"):
        W.download("test_entry", progress=False)
    assert not partial.exists() and not final.exists()
    # --force never resumes: a stale partial is discarded and the file is fetched from byte 0
    partial.write_bytes(b"stale")
    assert W.download("test_entry", force=True, progress=False).read_bytes() == PAYLOAD
    assert _Handler.requests[-1]["range"] is None and not partial.exists()


def test_file_url_download(cache, tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    _entry(monkeypatch, src.as_uri(), sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert W.download("test_entry", progress=False).read_bytes() == PAYLOAD


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def test_archive_download_extracts_safely(cache, server, monkeypatch):
    data = _tar({"exp1/checkpoints/last.ckpt": b"ckpt", "exp1/hparams.yaml": b"a: 1\n"})
    _Handler.files["/exp1.tar.gz"] = data
    _entry(monkeypatch, f"{server}/exp1.tar.gz", filename="exp1.tar.gz", archive=True, extract_dir="exp1",
           sha256=hashlib.sha256(data).hexdigest())
    out = W.download("test_entry", progress=False)
    assert out == cache / "weights" / "exp1" and W.resolve("test_entry") == out
    assert (out / "hparams.yaml").read_text() == "a: 1\n"
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == b"ckpt"


@pytest.mark.parametrize("members,links", [
    ({"../evil.txt": b"x"}, None),
    ({"/abs/evil.txt": b"x"}, None),
    ({"ok/a.txt": b"x"}, {"ok/link": "/etc/passwd"}),
])
def test_unsafe_archives_are_refused(tmp_path, members, links):
    arc = tmp_path / "a.tar.gz"
    arc.write_bytes(_tar(members, links))
    with pytest.raises(W.UnsafeArchiveError):
        W.extract_archive(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar.gz"]


def test_vbench_weights_cli(cache, server, monkeypatch):
    from benchmarks.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["weights", "list"])
    assert res.exit_code == 0, res.output
    for n in W.names():
        assert n in res.output
    assert "CC BY-NC-SA 4.0" in res.output and "not published" in res.output
    res = runner.invoke(main, ["weights", "list", "--json"])
    listed = json.loads(res.output)
    assert [d["name"] for d in listed] == W.names() and all(d["cached"] is False for d in listed)
    res = runner.invoke(main, ["weights", "info", "vaura_release"])
    assert "v-aura_public/24-08-01T08-34-26.tar.gz" in res.output and "archive: True" in res.output
    res = runner.invoke(main, ["weights", "path", "dac_44khz"])
    assert res.output.strip() == str(cache / "weights" / "weights_44khz_8kbps_0.0.1.pth")
    res = runner.invoke(main, ["weights", "verify", "dac_44khz"])
    assert res.exit_code == 2 and "vbench weights download dac_44khz" in res.output
    res = runner.invoke(main, ["weights", "path", "bogus"])
    assert res.exit_code == 2 and "known:" in res.output
    _Handler.files["/w.bin"] = PAYLOAD
    _entry(monkeypatch, f"{server}/w.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    res = runner.invoke(main, ["weights", "download", "test_entry", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert str(cache / "weights" / "test.bin") in res.output
    res = runner.invoke(main, ["weights", "verify", "test_entry"])
    assert res.exit_code == 0 and res.output.startswith("ok")


def test_notice_lists_every_registry_entry():
    text = (REPO_ROOT / "NOTICE").read_text()
    lines = [ln for ln in text.splitlines() if ln.split(":")[0] in W.REGISTRY]
    assert lines == W.notice_lines(), "NOTICE drifted from the registry: regenerate it from notice_lines()"


def test_citation_and_licence_files():
    import yaml

    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    pref = cff["preferred-citation"]
    assert "Temporally Aligned Audio for Video with Autoregression" in pref["title"]
    assert [a["family-names"] for a in pref["authors"]] == ["Viertola", "Iashin", "Rahtu"]
    assert "2409.13689" in str(pref)
    lic = (REPO_ROOT / "LICENSE").read_text()
    assert lic.startswith("MIT License") and "2026 vaura-toolkit contributors" in lic
