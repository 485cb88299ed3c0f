"""The weights registry: every pretrained checkpoint the toolkit uses, where it lives, and how to get it.

One frozen `WeightsEntry` per checkpoint (name, URL, checksum, size, licence, contents). Loaders call
`resolve(NAME, checkpoint)`: with an explicit path it must exist; without one the registry's cache path is
used, and a missing file raises `WeightsNotFoundError` naming the URL, the exact path to place the file at,
the expected checksum and the command ``vbench weights download NAME``. An archive entry placed by hand
(``vaura_release``'s tar.gz) is checked against its digests and extracted on first use. `require` checks several
entries at once and names every missing one in one error (``vbench evaluate`` runs it before generating).

Messages name the running command's own option for a path (``--vggish-checkpoint PATH`` in ``vbench evaluate``,
``--codec-checkpoint PATH`` in ``vaura train``): each CLI command declares its options with
`visualsound.utils.cli.weights_options`, which sets `command_options` while it runs. A cached file that turns out
to be damaged (a checksum mismatch, a text file where a checkpoint should be) gets `damaged_file_hint`: delete it
and download again (``vbench weights download NAME --force``, the URL); `cache_problem` is the cheap check of
``vbench weights list``.

Cache directory: ``$VAURA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/vaura-toolkit``, else
``~/.cache/vaura-toolkit``; checkpoints live in its ``weights/`` sub-folder.

Downloads (`download`) stream with a tqdm progress bar into ``<file>.partial`` next to the final file, resume
from an existing ``.partial`` with an HTTP Range request (or restart when the server ignores it), verify the
checksum, and only then `os.replace` the file into place: a killed or failed download never leaves a file that
looks complete. A checksum mismatch deletes the download. When upstream publishes no full sha256, the digest
seen at download time is recorded in ``<file>.sha256`` so later `verify` calls detect corruption. Archive
entries (``vaura_release``, a tar.gz) are extracted with path checks (absolute paths, ``..`` and links are
refused) into a temporary folder that is renamed into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from visualsound.errors import ToolkitError
from visualsound.utils.atomic import atomic_write_text
from visualsound.utils.config import FrozenConfig

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SYNC_ROOT = "https://a3s.fi/swift/v1/AUTH_a235c0f452d648828f745589cde1219a"


class WeightsError(ToolkitError):
    """Base class of weights-registry errors."""


class UnknownWeightsError(WeightsError, ValueError):
    """The requested registry name does not exist."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A checkpoint file is not where it should be."""


class ChecksumMismatchError(WeightsError):
    """A file's checksum differs from the published (or recorded) one."""


class DownloadError(WeightsError):
    """A download failed or was cut short; the final file was not written."""


class UnsafeArchiveError(WeightsError):
    """A tar archive holds a member that would escape the extraction folder (absolute path, ``..``, link)."""


@dataclass(frozen=True)
class WeightsEntry(FrozenConfig):
    """One checkpoint of the registry.

    ``sha256`` is the full published digest or None ("not published"); ``sha256_prefix`` / ``md5_prefix`` hold
    the shorter digests some projects publish (torch-hub file-name hashes, README md5 prefixes) and are checked
    when no full sha256 is known. ``archive`` entries are tar.gz files extracted into ``extract_dir``.
    """

    name: str
    filename: str
    url: str
    licence: str
    source: str
    contents: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    md5_prefix: str | None = None
    approx_size: str | None = None
    archive: bool = False
    extract_dir: str | None = None
    notes: str = ""

    @property
    def checksum_text(self) -> str:
        """The digests known for this file, for messages (``sha256 not published (md5 prefix ...)``)."""
        if self.sha256:
            return f"sha256 {self.sha256}"
        parts = []
        if self.sha256_prefix:
            parts.append(f"sha256 prefix {self.sha256_prefix}")
        if self.md5_prefix:
            parts.append(f"md5 prefix {self.md5_prefix}")
        return "sha256 not published" + (f" ({', '.join(parts)})" if parts else "")


def _sync(exp: str, rel: str) -> str:
    return f"{_SYNC_ROOT}/sync/sync_models/{exp}/{rel}"


_SYNC_LICENCE = ("MIT (the v-iashin/Synchformer repository licence; no separate weights licence; the visual branch "
                 "is initialised from Motionformer, CC BY-NC 4.0)")
_SYNC_SOURCE = "https://github.com/v-iashin/Synchformer"

_ENTRIES: tuple[WeightsEntry, ...] = (
    WeightsEntry(
        name="imagebind_huge", filename="imagebind_huge.pth",
        url="https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
        licence="CC BY-NC-SA 4.0", source="https://github.com/facebookresearch/ImageBind",
        contents="ImageBind-Huge state dict (vision, text, audio, depth, thermal, IMU towers); the toolkit uses "
                 "the vision and audio towers for VisualSound scoring and the IB metric",
        approx_size="~4.5 GB",
        notes="URL from the ImageBind README; no checksum published. The repository LICENSE file is CC BY-NC-SA 4.0 "
              "(its README says CC-BY-NC 4.0); non-commercial use only"),
    WeightsEntry(
        name="synchformer_audioset", filename="24-01-04T16-39-21.pt", url=_sync("24-01-04T16-39-21",
                                                                                "24-01-04T16-39-21.pt"),
        licence=_SYNC_LICENCE, source=_SYNC_SOURCE,
        contents="Synchformer stage II (AudioSet): Motionformer visual + AST audio feature extractors and the "
                 "offset-classification transformer (21 classes, +-2 s); used by the Sync metric",
        md5_prefix="54037d2",
        notes="URL from Synchformer's README/utils; its config is cfg-24-01-04T16-39-21.yaml in the same folder"),
    WeightsEntry(
        name="synchformer_vggsound", filename="24-01-02T10-00-53.pt", url=_sync("24-01-02T10-00-53",
                                                                                "24-01-02T10-00-53.pt"),
        licence=_SYNC_LICENCE, source=_SYNC_SOURCE,
        contents="Synchformer stage II (VGGSound): feature extractors + offset transformer",
        md5_prefix="19592ed", notes="URL from Synchformer's README/utils"),
    WeightsEntry(
        name="synchformer_lrs3", filename="23-12-23T18-33-57.pt", url=_sync("23-12-23T18-33-57",
                                                                            "23-12-23T18-33-57.pt"),
        licence=_SYNC_LICENCE, source=_SYNC_SOURCE,
        contents="Synchformer stage II (LRS3 'Full Scene'): feature extractors + offset transformer",
        md5_prefix="4415276", notes="URL from Synchformer's README/utils"),
    WeightsEntry(
        name="avclip_vggsound", filename="avclip_23-12-22T16-10-50_epoch_best.pt",
        url=_sync("23-12-22T16-10-50", "checkpoints/epoch_best.pt"),
        licence=_SYNC_LICENCE, source=_SYNC_SOURCE,
        contents="Synchformer stage I Segment AVCLIP (VGGSound): audio (AST) and visual (Motionformer) segment "
                 "encoders; V-AURA's visual feature extractor",
        md5_prefix="a9979df",
        notes="URL from the Synchformer and V-AURA READMEs; upstream file name is epoch_best.pt (renamed in the "
              "cache so the two AVCLIP checkpoints do not collide)"),
    WeightsEntry(
        name="avclip_audioset", filename="avclip_23-12-22T16-13-38_epoch_best.pt",
        url=_sync("23-12-22T16-13-38", "checkpoints/epoch_best.pt"),
        licence=_SYNC_LICENCE, source=_SYNC_SOURCE,
        contents="Synchformer stage I Segment AVCLIP (AudioSet): audio and visual segment encoders",
        md5_prefix="4a566f2", notes="URL from the Synchformer README; upstream file name is epoch_best.pt"),
    WeightsEntry(
        name="vaura_release", filename="24-08-01T08-34-26.tar.gz",
        url=f"{_SYNC_ROOT}/v-aura_public/24-08-01T08-34-26.tar.gz",
        licence="not stated (the V-AURA code is MIT; the README gives no licence for the weights)",
        source="https://github.com/ilpoviertola/V-AURA",
        contents="V-AURA paper checkpoint: tar.gz of the experiment folder 24-08-01T08-34-26 (PyTorch Lightning "
                 "ckpt + hparams.yaml)",
        archive=True, extract_dir="24-08-01T08-34-26",
        notes="URL from the V-AURA README; resolve() returns the extracted experiment folder"),
    WeightsEntry(
        name="dac_44khz", filename="weights_44khz_8kbps_0.0.1.pth",
        url="https://github.com/descriptinc/descript-audio-codec/releases/download/0.0.1/weights.pth",
        licence="MIT", source="https://github.com/descriptinc/descript-audio-codec",
        contents="Descript Audio Codec 44.1 kHz, 8 kbps, tag 0.0.1 (9 codebooks of 1024, 86 Hz frames)",
        approx_size="~300 MB",
        notes="URL from dac/utils/__init__.py (__MODEL_URLS__); the dac package caches it under this file name"),
    WeightsEntry(
        name="vggish", filename="vggish-10086976.pth",
        url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
        licence="Apache-2.0", source="https://github.com/harritaylor/torchvggish",
        contents="VGGish (AudioSet) weights ported from TensorFlow; the FAD metric's embedding network",
        approx_size="~275 MB",
        notes="URL from torchvggish hubconf.py; the file name looks like a torch-hub sha256 prefix (10086976), but "
              "torchvggish never checks it (check_hash off), so it is not enforced here"),
    WeightsEntry(
        name="passt", filename="passt-s-f128-p16-s10-ap.476-swa.pt",
        url="https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
        licence="Apache-2.0", source="https://github.com/kkoutini/PaSST",
        contents="PaSST-S (patch 16, stride 10, 128 mel, SWA, AudioSet mAP .476) classifier; the KLD metric",
        approx_size="~330 MB",
        notes="URL from hear21passt's default config; licence is the PaSST repository's"),
    WeightsEntry(
        name="panns_cnn14_16k", filename="Cnn14_16k_mAP=0.438.pth",
        url="https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth",
        licence="CC BY 4.0 (the Zenodo record's licence; the PANNs code is MIT)",
        source="https://github.com/qiuqiangkong/audioset_tagging_cnn",
        contents="PANNs Cnn14 trained on AudioSet at 16 kHz (mAP .438): {'model': state dict}, including the "
                 "front end's STFT kernels and mel matrix; the FD/KL/IS-PANNs metrics of av-benchmark",
        notes="URL from the PANNs README and av-benchmark (which caches it as ~/.cache/audioldm_eval/ckpt/"
              "Cnn14_16k_mAP=0.438.pth); no checksum published, so the sha256 seen at download is recorded. The "
              "licence is the one a mirror quotes for Zenodo record 10.5281/zenodo.3987831 (check the record); "
              "the state dict holds 84 tensors, 81,049,500 float32 values"),
)

REGISTRY: dict[str, WeightsEntry] = {e.name: e for e in _ENTRIES}


def names() -> list[str]:
    """Registry names in registry order."""
    return list(REGISTRY)


def get(name: str) -> WeightsEntry:
    """The registry entry called `name`; unknown names raise `UnknownWeightsError` listing the known ones."""
    if name not in REGISTRY:
        raise UnknownWeightsError(f"unknown weights name {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def cache_dir() -> Path:
    """``$VAURA_CACHE_DIR``, else ``$XDG_CACHE_HOME/vaura-toolkit``, else ``~/.cache/vaura-toolkit``."""
    env = os.environ.get("VAURA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vaura-toolkit"


def download_path(name: str) -> Path:
    """Where the downloaded file of `name` is stored (the tar.gz itself for archive entries)."""
    return cache_dir() / "weights" / get(name).filename


def cache_path(name: str) -> Path:
    """The path `resolve(name)` returns: the file, or the extracted folder for archive entries."""
    entry = get(name)
    if entry.archive:
        return cache_dir() / "weights" / (entry.extract_dir or entry.filename.split(".")[0])
    return download_path(name)


# -- the running command's options ---------------------------------------------------------------------------
_COMMAND_OPTIONS: dict[str, str] | None = None  # registry name -> option of the running CLI command (None: no CLI)


@contextlib.contextmanager
def command_options(options: Mapping[str, str]) -> Iterator[None]:
    """While a CLI command runs: the option through which it takes the path of each registry entry it uses, e.g.
    ``{"vggish": "--vggish-checkpoint"}``, so that missing-weights messages name that option (an entry left out:
    the command reads it from the cache only). Set by `visualsound.utils.cli.weights_options`; a plain module
    variable, so threads and forked workers of the command see it too."""
    global _COMMAND_OPTIONS
    saved = _COMMAND_OPTIONS
    _COMMAND_OPTIONS = dict(options)
    try:
        yield
    finally:
        _COMMAND_OPTIONS = saved


def option_for(name: str) -> str | None:
    """The running command's option for the path of registry entry `name` (None: none, or not in a command)."""
    return (_COMMAND_OPTIONS or {}).get(name)


def option_hint(name: str) -> str:
    """The last sentence of a missing-weights message: how to give a copy you already have."""
    option = option_for(name)
    if option:
        return f"Or pass {option} PATH to use a copy you already have."
    if _COMMAND_OPTIONS is not None:
        return "(This command takes no path for it: it reads the cache only.)"
    return "Or give the path of a copy you already have (the loader's checkpoint argument)."


def resolve(name: str, path: str | os.PathLike | None = None) -> Path:
    """The checkpoint of registry entry `name`: `path` when given (must exist), else the cache path.

    Raises `WeightsNotFoundError` (with URL, target path, checksum, download command and the running command's
    option for a path) when missing. An archive entry whose tar.gz was placed in the cache by hand is checked
    against its digests and extracted now (`extract_placed`).
    """
    entry = get(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            option = option_for(name)
            raise WeightsNotFoundError(
                f"checkpoint for {name!r} not found at {p} (given explicitly{' with ' + option if option else ''}); "
                f"fix the path, or drop it to use the cache ({cache_path(name)}, filled by "
                f"`vbench weights download {name}`)")
        return p
    p = cache_path(name)
    if p.exists():
        return p
    if entry.archive and download_path(name).is_file():
        return extract_placed(name)
    raise WeightsNotFoundError(f"weights {name!r} are not in the cache: {_missing_text(entry)} {option_hint(name)}")


def _missing_text(entry: WeightsEntry) -> str:
    placed = "; it is extracted on first use" if entry.archive else ""
    return (f"expected {cache_path(entry.name)}. Download it with `vbench weights download {entry.name}`, or "
            f"fetch {entry.url} yourself and place it at {download_path(entry.name)} ({entry.checksum_text}; "
            f"licence: {entry.licence}{placed}).")


def is_present(name: str) -> bool:
    """Whether `resolve(name)` finds the entry in the cache (an archive placed but not yet extracted counts)."""
    entry = get(name)
    return cache_path(name).exists() or (entry.archive and download_path(name).is_file())


def require(needs: Mapping[str, str | os.PathLike | None], purpose: str = "") -> None:
    """Check, before anything runs, that every registry entry of `needs` (name -> explicit path or None for the
    cache) is there; one `WeightsNotFoundError` names every missing one with its URL, path and how to get it."""
    lines = []
    for name, path in needs.items():
        entry = get(name)
        option = option_for(name)
        if path is not None:
            if not Path(path).expanduser().exists():
                lines.append(f"{name}: {path} (given{' with ' + option if option else ''}) does not exist")
            continue
        if is_present(name):
            continue
        lines.append(f"{name}: not in the cache: {_missing_text(entry)} {option_hint(name)}")
    if lines:
        n, what = len(lines), f" {purpose}" if purpose else ""
        raise WeightsNotFoundError(f"{n} weights file{'s' if n > 1 else ''}{what} {'are' if n > 1 else 'is'} missing "
                                   f"(nothing was run):\n  - " + "\n  - ".join(lines))


# -- checksums ----------------------------------------------------------------------------------------------
def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


DEBUG_WEIGHTS_TAG = "debug-weights"  # what a job records as its checkpoint digest when it ran on debug weights


def checkpoint_digest(name: str, checkpoint: str | os.PathLike | None, debug_weights: bool
                      ) -> tuple[Path | None, str]:
    """``(path, sha256)`` of the checkpoint a job uses (registry `name`'s cache path unless `checkpoint` is given),
    or ``(None, DEBUG_WEIGHTS_TAG)`` with debug weights; both a checkpoint and debug weights raise `ConfigError`.
    Jobs record the digest so that results of other weights are never mixed."""
    if debug_weights:
        if checkpoint is not None:
            from visualsound.errors import ConfigError

            raise ConfigError("pass either a checkpoint or debug weights, not both")
        return None, DEBUG_WEIGHTS_TAG
    path = Path(resolve(name, checkpoint))
    log.info("hashing %s", path)
    return path, file_digest(path)


def _recorded_sha_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `verify`: the file, its sha256, and against what it was checked (``method``)."""

    name: str
    path: Path
    sha256: str
    method: str  # "published sha256" | "published sha256 prefix" | "published md5 prefix" | "recorded sha256"
    checked: bool  # False: nothing to compare against (no published or recorded digest)


def _check_file(entry: WeightsEntry, path: Path, sha: str | None = None) -> VerifyResult:
    """Compare `path` with every digest known for `entry`; raise `ChecksumMismatchError` on a difference."""
    sha = sha or file_digest(path)
    checks: list[tuple[str, str, str]] = []
    if entry.sha256:
        checks.append(("published sha256", entry.sha256.lower(), sha))
    else:
        if entry.sha256_prefix:
            checks.append(("published sha256 prefix", entry.sha256_prefix.lower(), sha[: len(entry.sha256_prefix)]))
        if entry.md5_prefix:
            md5 = file_digest(path, "md5")
            checks.append(("published md5 prefix", entry.md5_prefix.lower(), md5[: len(entry.md5_prefix)]))
        rec = _recorded_sha_path(path)
        if rec.exists():
            checks.append(("recorded sha256", rec.read_text().split()[0].lower(), sha))
    for method, expected, got in checks:
        if expected != got:
            raise ChecksumMismatchError(
                f"{entry.name}: {path} fails the {method} check: expected {expected}, got {got}: it is damaged or "
                f"another file. Delete it and download it again: `vbench weights download {entry.name} --force` "
                f"(or fetch {entry.url}).")
    method = " + ".join(m for m, _, _ in checks) or "none"
    return VerifyResult(entry.name, path, sha, method, checked=bool(checks))


def verify(name: str, path: str | os.PathLike | None = None) -> VerifyResult:
    """Check a downloaded file (the archive for archive entries) against its published or recorded digest; a file
    of the wrong kind (`file_problem`: a text file where a checkpoint should be) fails even when no digest is
    known (`ChecksumMismatchError` with what to do)."""
    entry = get(name)
    p = Path(path).expanduser() if path is not None else download_path(name)
    if not p.is_file():
        raise WeightsNotFoundError(f"{name}: no file to verify at {p}; run `vbench weights download {name}`")
    return _check_kind(entry, p, _check_file(entry, p))


def _check_kind(entry: WeightsEntry, path: Path, result: VerifyResult) -> VerifyResult:
    """After `_check_file` found no digest to compare against: refuse a file of the wrong kind (`file_problem`)."""
    problem = None if result.checked else file_problem(entry, path)
    if problem:
        raise ChecksumMismatchError(f"{entry.name}: {path} is {problem}, not {_kind(entry)}.{damaged_file_hint(path)}")
    return result


# -- damaged files ------------------------------------------------------------------------------------------
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save: a zip archive (torch >= 1.6) or a legacy pickle
_GZIP_MAGIC = b"\x1f\x8b"


def _kind(entry: WeightsEntry) -> str:
    return "a gzip-compressed tar archive" if entry.archive else "a torch checkpoint"


def file_problem(entry: WeightsEntry, path: str | os.PathLike) -> str | None:
    """What is wrong with `path` as `entry`'s downloaded file, from its first bytes (cheap: no hashing): an empty
    file, or one of a recognisably other kind (``"a text file"``: an error page or a Git LFS pointer saved in its
    place, ``"a JSON file"``, media, ...); None when it looks right or is a binary of unknown kind."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "an empty file"
    if head.startswith(_GZIP_MAGIC) if entry.archive else head.startswith(_TORCH_MAGIC):
        return None
    from visualsound.utils.checkpoint import describe_file  # only here: it imports torch

    kind = describe_file(path)
    return None if kind == "a binary file of unknown kind" else kind


def cache_problem(name: str) -> str | None:
    """`file_problem` of the cached file of `name` (None when absent, or for an extracted archive)."""
    entry = get(name)
    if entry.archive and cache_path(name).exists():
        return None
    p = download_path(name)
    return file_problem(entry, p) if p.is_file() else None


def owner_of(path: str | os.PathLike) -> WeightsEntry | None:
    """The registry entry whose cached file (or extracted archive folder) `path` is or lies in; None otherwise."""
    p = Path(path).expanduser().resolve()
    for e in REGISTRY.values():
        if p == download_path(e.name).resolve():
            return e
        if e.archive and cache_path(e.name).resolve() in p.parents:
            return e
    return None


def damaged_file_hint(path: str | os.PathLike) -> str:
    """For a file of the weights cache that cannot be used: what to do (delete it and download again, with the
    command and URL); '' for any other file."""
    e = owner_of(path)
    if e is None:
        return ""
    return (f" It is the cached copy of {e.name!r} and is damaged or not the right file: delete it and download it "
            f"again with `vbench weights download {e.name} --force` (it deletes the cached copy first), or fetch "
            f"{e.url} and place it at {download_path(e.name)}.")


# -- downloads ----------------------------------------------------------------------------------------------
def _open(url: str, offset: int, timeout: float) -> tuple[object, bool, int | None]:
    """Open `url` from byte `offset`; returns (response, resumed, total_size_or_None)."""
    req = urllib.request.Request(url, headers={"User-Agent": "vaura-toolkit"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (registry URLs are fixed https/file URLs)
    status = getattr(resp, "status", None) or 200
    length = resp.headers.get("Content-Length")
    length_i = int(length) if length is not None and length.isdigit() else None
    resumed = bool(offset) and status == 206
    total = (length_i + offset if resumed else length_i) if length_i is not None else None
    return resp, resumed, total


def _range_total(content_range: str | None) -> int | None:
    """The full size in a ``Content-Range: bytes */SIZE`` (or ``bytes A-B/SIZE``) header; None when absent."""
    if not content_range or "/" not in content_range:
        return None
    size = content_range.rsplit("/", 1)[1].strip()
    return int(size) if size.isdigit() else None


def _fetch(entry: WeightsEntry, partial: Path, progress: bool, timeout: float) -> None:
    from tqdm import tqdm

    offset = partial.stat().st_size if partial.exists() else 0
    try:
        resp, resumed, total = _open(entry.url, offset, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the partial may be complete: only if its size is the server's file size
            size = _range_total(e.headers.get("Content-Range") if e.headers else None)
            if size == offset:
                log.info("%s: the partial download already holds all %d bytes; verifying it", entry.name, size)
                return
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"{entry.name}: the partial download ({offset} bytes) does not match the server's file "
                f"({size if size is not None else 'size not stated'}); deleted {partial}, run "
                f"`vbench weights download {entry.name}` again") from e
        raise DownloadError(f"{entry.name}: HTTP {e.code} from {entry.url}: {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{entry.name}: cannot open {entry.url}: {e}") from e
    if offset and not resumed:
        log.info("%s: server ignored the Range request; restarting from 0", entry.name)
        offset = 0
    got = offset
    try:
        with resp, open(partial, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=entry.name, disable=not progress) as bar:
            while True:
                chunk = resp.read(_CHUNK)  # type: ignore[attr-defined]
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"{entry.name}: download interrupted after {got} bytes ({e}); {partial} is kept, run "
                            f"`vbench weights download {entry.name}` again to resume") from e
    if total is not None and got != total:
        raise DownloadError(f"{entry.name}: download cut short at {got} of {total} bytes; {partial} is kept, run "
                            f"`vbench weights download {entry.name}` again to resume")


def download(name: str, *, force: bool = False, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download registry entry `name` into the cache (verified, atomic, resumable); returns `resolve(name)`.

    An existing file is verified instead of downloaded again unless `force`, which also discards a ``.partial``
    left by an interrupted download (no resume) and an extracted archive folder.
    """
    entry = get(name)
    target = download_path(name)
    partial = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    if force:
        for p in (target, _recorded_sha_path(target), partial):
            p.unlink(missing_ok=True)
        if entry.archive and cache_path(name).exists():
            shutil.rmtree(cache_path(name))
    if not target.exists():
        log.info("downloading %s from %s to %s", name, entry.url, target)
        _fetch(entry, partial, progress, timeout)
        sha = file_digest(partial)
        try:
            _check_file(entry, partial, sha)
        except ChecksumMismatchError as e:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatchError(f"download refused and deleted: {e}") from e
        if not entry.sha256:
            log.warning("%s: no full sha256 is published; recording sha256 %s for later checks", name, sha)
            atomic_write_text(_recorded_sha_path(target), f"{sha}  {target.name}\n")
        os.replace(partial, target)
    else:
        _check_kind(entry, target, _check_file(entry, target))  # a damaged cached copy is never taken for a good one
    if entry.archive and not cache_path(name).exists():
        extract_archive(target, cache_path(name))
    return resolve(name)


def _check_member(member: tarfile.TarInfo) -> None:
    p = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or p.is_absolute() or (p.parts and ":" in p.parts[0]):
        raise UnsafeArchiveError(f"archive member {member.name!r} has an absolute path")
    if ".." in p.parts:
        raise UnsafeArchiveError(f"archive member {member.name!r} contains '..'")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"archive member {member.name!r} is not a regular file or folder (link/device)")


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Safely extract a tar(.gz) into `dest` (which must not exist); returns `dest`.

    Every member is checked first (no absolute paths, no ``..``, no links or devices). Extraction goes to a
    temporary sibling folder renamed into place; an archive with a single top-level folder has that folder
    become `dest`.
    """
    dest = Path(dest)
    if dest.exists():
        raise WeightsError(f"extraction target {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extract", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(m)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise WeightsError(f"{archive} is not a readable tar archive ({type(e).__name__}: {e}): it is damaged or "
                               f"incomplete.{damaged_file_hint(archive)}") from e
        tops = list(tmp.iterdir())
        src = tops[0] if len(tops) == 1 and tops[0].is_dir() else tmp
        os.replace(src, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def extract_placed(name: str) -> Path:
    """Extract the tar.gz of archive entry `name` found in the cache (placed there by hand, or a download whose
    extraction was cut short) into its cache folder, after checking it against every digest known for it; returns
    the folder. Safe (`extract_archive`: member checks, a temporary folder renamed into place) and race-free: when
    another process finishes first, its folder is used."""
    entry = get(name)
    archive, dest = download_path(name), cache_path(name)
    checked = _check_kind(entry, archive, _check_file(entry, archive))  # a mismatch raises, naming the remedy
    log.warning("%s: extracting %s into %s (once; %s)", name, archive, dest,
                f"checked: {checked.method}" if checked.checked else
                "no checksum is published for it, so only its members are checked")
    try:
        return extract_archive(archive, dest)
    except (WeightsError, OSError):
        if dest.is_dir():  # another process extracted it meanwhile
            return dest
        raise


# -- licences -----------------------------------------------------------------------------------------------
def notice_lines() -> list[str]:
    """One ``name: licence, source`` line per registry entry (the body of the repository's NOTICE file)."""
    return [f"{e.name}: {e.licence}, {e.source}" for e in REGISTRY.values()]


def entry_dict(name: str) -> dict:
    """The entry as a plain dict plus its cache path and whether it is present (for JSON listings)."""
    entry = get(name)
    out = dataclasses.asdict(entry)
    out["cache_path"] = str(cache_path(name))
    out["cached"] = is_present(name)
    out["problem"] = cache_problem(name)
    return out
