"""Tests of the shared helpers: atomic writes, frozen configs, safe checkpoint loading, key maps, CLIs."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from visualsound.errors import CheckpointError, ConfigError
from visualsound.utils.atomic import atomic_open, atomic_torch_save, atomic_write_json
from visualsound.utils.checkpoint import (
    KeyMap,
    OpaqueObject,
    load_state_dict_strict,
    restricted_torch_load,
    safe_torch_load,
)
from visualsound.utils.config import FrozenConfig, register_preset


@dataclasses.dataclass(frozen=True)
class _Inner(FrozenConfig):
    a: int = 1


@dataclasses.dataclass(frozen=True)
class _Cfg(FrozenConfig):
    width: int = 8
    rate: float = 0.5
    dims: tuple[int, ...] = (1, 2)
    inner: _Inner = _Inner()


register_preset(_Cfg, "tiny", _Cfg(width=2))


def test_config_roundtrip_and_overrides(tmp_path):
    cfg = _Cfg.preset("tiny").with_overrides(["rate=1", "inner.a=5", "dims=[3, 4]"])
    assert cfg == _Cfg(width=2, rate=1.0, dims=(3, 4), inner=_Inner(a=5))
    assert _Cfg().with_overrides(["rate=3e-4"]).rate == 3e-4  # YAML 1.1 would read this as a string
    for name in ("c.json", "c.yaml"):
        cfg.save(tmp_path / name)
        assert _Cfg.load(tmp_path / name) == cfg
    assert _Cfg.resolve(tmp_path / "c.json") == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        _Cfg.from_dict({"width": 1, "bogus": 2})
    with pytest.raises(ConfigError, match="unknown preset"):
        _Cfg.preset("huge")
    with pytest.raises(ConfigError, match="unknown key"):
        cfg.with_overrides(["nope=1"])


def test_atomic_open_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("partial")
        raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, umask):
    import os
    import stat

    import numpy as np

    from visualsound.media import write_video, write_wav

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"a": 1})
        write_wav(tmp_path / "b.wav", np.zeros((1, 160), np.float32), 16000)
        write_video(tmp_path / "c.mp4", np.zeros((2, 16, 16, 3), np.uint8), 25)
        with open(tmp_path / "plain.txt", "w") as f:  # what a plain open() gives
            f.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.json", "b.wav", "c.mp4"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


class Foreign:  # stands in for omegaconf.DictConfig / Lightning objects pickled into checkpoints
    def __init__(self, x):
        self.x = x

    def __reduce__(self):
        return (subprocess.call, (["false"],))  # would run a process if unpickled unrestricted


def test_restricted_load_never_executes_foreign_globals(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.ones(2)}, "args": Foreign(3)}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    obj = safe_torch_load(path)
    assert torch.equal(obj["model"]["w"], torch.ones(2))
    assert isinstance(obj["args"], OpaqueObject) and obj["args"]._qualname == "call"
    assert restricted_torch_load(path)["model"]["w"].dtype == torch.float32
    atomic_torch_save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    assert safe_torch_load(tmp_path / "plain.pt")["w"].shape == (1,)


@pytest.mark.parametrize("content", [b"not a torch file", b"PK\x03\x04garbage", b""])
def test_safe_load_rejects_non_checkpoints(tmp_path, content):
    bad = tmp_path / "junk.pth"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        safe_torch_load(bad)
    with pytest.raises(CheckpointError, match="not found"):
        safe_torch_load(tmp_path / "missing.pth")


@pytest.mark.parametrize(("content", "kind"), [
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "WAV audio or AVI video"),  # 'R' is pickle's REDUCE: used to be IndexError
    (b"\x00\x00\x00\x18ftypisom", "MP4"),
    (b"\x1aE\xdf\xa3\x01", "Matroska"),
    (b"{\"a\": 1}", "JSON"),
    (b"\x80\x02R", "pickle"),  # a pickle the unpicklers fail on in their own way
    (b"\x80\x02}q\x00.", "pickle"),  # a valid pickle that is not a torch file
])
def test_safe_load_names_what_a_non_checkpoint_looks_like(tmp_path, content, kind):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(bad)
    msg = str(info.value)
    assert str(bad) in msg and kind in msg and "\n" not in msg, msg


def test_cli_refuses_a_non_checkpoint_with_exit_2(tmp_path):
    from vaura.cli import main

    wav = tmp_path / "sound.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    res = CliRunner().invoke(main, ["generate", "--video", str(video), "--out", str(tmp_path / "o.mp4"),
                                    "--checkpoint", str(wav)])
    assert res.exit_code == 2, res.output
    assert "sound.wav" in res.output and "WAV audio" in res.output
    assert "Traceback" not in res.output and "IndexError" not in res.output


def test_key_map_and_strict_load():
    km = KeyMap(rules=((r"module\.enc\.(.*)", r"\1"),), ignore=(r"other\..*",))
    sd = {"module.enc.weight": torch.ones(3, 2), "module.enc.bias": torch.zeros(3), "other.w": torch.ones(1)}
    mapped = km.apply(sd)
    assert set(mapped) == {"weight", "bias"}
    lin = torch.nn.Linear(2, 3)
    load_state_dict_strict(lin, mapped)
    assert torch.equal(lin.weight, torch.ones(3, 2))
    with pytest.raises(CheckpointError, match="match no rule.*stray"):
        km.apply({**sd, "stray": torch.ones(1)})
    with pytest.raises(CheckpointError, match="missing keys: bias"):
        load_state_dict_strict(lin, {"weight": torch.ones(3, 2)})
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_state_dict_strict(lin, {"weight": torch.ones(2, 2), "bias": torch.zeros(3)})
    with torch.device("meta"):
        meta = torch.nn.Linear(2, 3)
    load_state_dict_strict(meta, mapped)
    assert not meta.weight.is_meta


@pytest.mark.parametrize("module", ["visualsound.cli", "vaura.cli", "benchmarks.cli"])
def test_cli_help_and_version(module):
    main = __import__(module, fromlist=["main"]).main
    runner = CliRunner()
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["--version"])
    assert res.exit_code == 0 and "0." in res.output
    for name in main.list_commands(None):
        res = runner.invoke(main, [name, "--help"])
        assert res.exit_code == 0, f"{name} --help failed: {res.output}"


def test_weights_options_declares_the_options_and_passes_one_mapping(tmp_path, monkeypatch):
    """`weights_options` is the one table of a command's weights paths: it declares each option where it stands
    among the others (an option shared by several registry names once), passes {registry name: path or None},
    and names the options in missing-weights messages while the command runs; a bad table fails at once."""
    import click

    from visualsound import weights as W
    from visualsound.utils.cli import command_weights_options, weights_options

    monkeypatch.setenv("VAURA_CACHE_DIR", str(tmp_path / "cache"))
    seen = {}

    @click.command()
    @click.option("--first", default=None)
    @weights_options({"vggish": ("--vggish-checkpoint", "VGGish weights"), "passt": "--passt-checkpoint",
                      "synchformer_audioset": ("--sync", "Synchformer"), "synchformer_lrs3": "--sync"})
    @click.option("--last", default=None)
    def cmd(first, weights, last):
        seen.update(weights)
        W.resolve("passt")

    assert [p.opts[0] for p in cmd.params] == ["--first", "--vggish-checkpoint", "--passt-checkpoint", "--sync",
                                               "--last"]
    assert command_weights_options(cmd) == {"vggish": "--vggish-checkpoint", "passt": "--passt-checkpoint",
                                            "synchformer_audioset": "--sync", "synchformer_lrs3": "--sync"}
    helps = {p.opts[0]: p.help for p in cmd.params}
    assert helps["--vggish-checkpoint"] == ("VGGish weights (default: vggish from the weights cache, VAURA_CACHE_DIR; "
                                            "see `vbench weights list`).")
    assert helps["--passt-checkpoint"].startswith("passt weights (passt-s-f128-p16-s10-ap.476-swa.pt) (default: passt")
    assert helps["--sync"].startswith("Synchformer (default: synchformer_audioset or synchformer_lrs3 from")
    given = tmp_path / "s.pt"
    given.write_bytes(b"x")
    res = CliRunner().invoke(cmd, ["--sync", str(given)])
    assert isinstance(res.exception, W.WeightsNotFoundError) and "Or pass --passt-checkpoint PATH" in str(res.exception)
    assert seen == {"vggish": None, "passt": None, "synchformer_audioset": str(given), "synchformer_lrs3": str(given)}
    res = CliRunner().invoke(cmd, ["--vggish-checkpoint", str(tmp_path / "nope.pth")])  # exists=True by default
    assert res.exit_code == 2 and "does not exist" in res.output
    for table, error in (({"nope": "--nope"}, W.UnknownWeightsError), ({"vggish": "vggish"}, ValueError),
                         ({"vggish": ("--x", "a"), "passt": ("--x", "b")}, ValueError)):
        with pytest.raises(error):
            weights_options(table)


@pytest.mark.parametrize("module", ["visualsound.cli", "vaura.cli", "benchmarks.cli"])
def test_python_dash_m_runs_the_cli(module):
    """``python -m benchmarks.cli`` (the README's way round a foreign ``vbench`` on PATH) runs the CLI: it used to
    import the module, print nothing and exit 0."""
    import os

    from tests.conftest import REPO_ROOT

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env,
                         cwd=REPO_ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Usage:" in res.stdout and "Commands:" in res.stdout, res.stdout
    res = subprocess.run([sys.executable, "-m", module, "no-such-command"], capture_output=True, text=True,
                         env=env, cwd=REPO_ROOT, timeout=120)
    assert res.returncode == 2 and "No such command" in res.stderr, (res.stdout, res.stderr)


def test_architecture_map_names_what_its_modules_have():
    """Every code name in a module's row of docs/ARCHITECTURE.md (a backticked identifier with an underscore or a
    capital: functions, classes, constants) occurs in that module's source or a file the row names by path: a
    retired name (sync_filter's `folder_index`, replaced by `visualsound.vggsound.index_folder`) fails here."""
    import re

    from tests.conftest import REPO_ROOT

    stale, section = [], None
    for line in (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        if m := re.match(r"### `(\w+)/`", line):
            section = m.group(1)
            continue
        if section is None or not line.startswith("| `"):
            continue
        first, rest = line.split(" | ", 1)
        source = ""
        for name in re.findall(r"`([^`]+(?:\.py|/))`", first):
            path = REPO_ROOT / section / name
            files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
            source += "".join(f.read_text() for f in files)
        for named in re.findall(r"`(\w+(?:/\w+)*\.py)`", rest):
            if (REPO_ROOT / named).is_file():
                source += (REPO_ROOT / named).read_text()
        if not source:
            continue
        for token in re.findall(r"`([A-Za-z_]\w*)(?:\([^`]*\))?`", rest):
            if ("_" in token.strip("_") or token[0].isupper()) and token not in source:
                stale.append(f"{first.strip('| ')}: {token}")
    assert not stale, stale


def test_layering_imports_point_down():
    """visualsound must not import vaura/benchmarks; vaura must not import benchmarks."""
    code = (
        "import sys, pkgutil, importlib\n"
        "import visualsound\n"
        "for m in pkgutil.walk_packages(visualsound.__path__, 'visualsound.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert not any(k.split('.')[0] in ('vaura', 'benchmarks') for k in sys.modules), "
        "[k for k in sys.modules if k.split('.')[0] in ('vaura', 'benchmarks')]\n"
        "import vaura\n"
        "for m in pkgutil.walk_packages(vaura.__path__, 'vaura.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert not any(k.split('.')[0] == 'benchmarks' for k in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_threads_option_and_default_worker_cap(monkeypatch):
    from visualsound.utils import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert threads.cap_default_workers(16) == 2 and threads.cap_default_workers(1) == 1
    n = torch.get_num_threads()
    try:
        threads.set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)
    torch.set_num_threads(2)
    try:
        with threads.torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), threads.torch_threads(1):
            raise RuntimeError("the block fails")
        assert torch.get_num_threads() == 2  # restored on the way out of a failing block too
    finally:
        torch.set_num_threads(n)
    for module, cmd in (("visualsound.cli", "score"), ("vaura.cli", "extract"), ("vaura.cli", "generate")):
        main = __import__(module, fromlist=["main"]).main
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert "--threads" in res.output, (module, cmd)
    res = CliRunner().invoke(__import__("visualsound.cli", fromlist=["main"]).main, ["score", "--help"])
    assert "default: off" in res.output  # silence and minimum-duration checks are off unless asked for
