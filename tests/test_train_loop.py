"""Tests of the trainer: schedule, optimiser groups, exact resume, non-finite guard, 2-process gloo DDP, overfit."""

from __future__ import annotations

import csv
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from vaura.config import VAuraConfig
from vaura.model import build_model
from vaura.train.config import TrainConfig
from vaura.train.ddp import DistInfo, init_distributed, shutdown
from vaura.train.loop import NonFiniteLossError, Trainer, build_optimizer, load_checkpoint, lr_factor
from visualsound.errors import ConfigError

T_SHORT = 24  # short windows keep the CPU tests fast; the model takes any T <= 247


pytestmark = pytest.mark.usefixtures("one_thread")


class PatternWindows(torch.utils.data.Dataset):
    """Cached-style items: clip ``c`` has codes ``table[c, q, t % period]`` and its own random visual features."""

    def __init__(self, n: int, frames: int = T_SHORT, period: int = 6, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        table = torch.randint(0, 1024, (n, 9, period), generator=g)
        self.codes = table[:, :, torch.arange(frames) % period]
        self.visual = torch.randn(n, 32, 32, generator=g)  # the tiny preset's 32-d visual features
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "clip_id": f"c{i}", "start": 0.0, "codes": self.codes[i], "visual": self.visual[i]}


def tiny_cfg(*overrides: str) -> TrainConfig:
    base = ["model_overrides=[visual_dim=32, cond_drop=0.0]", "data.batch_size=2", "log_every=1", "val_every=0",
            "ckpt_every=1000"]
    return TrainConfig.preset("tiny").with_overrides([*base, *overrides])


def make_model(cfg: TrainConfig):
    mcfg = VAuraConfig.resolve(cfg.model).with_overrides(list(cfg.model_overrides))
    return build_model(mcfg, seed=cfg.seed)


def test_lr_schedule_matches_the_release():
    f = [lr_factor(s, 1000, 200_000, 0.1) for s in (0, 500, 1000, 100_500, 200_000, 300_000)]
    assert f[0] == 0.0 and f[1] == pytest.approx(0.5) and f[2] == pytest.approx(1.0)
    assert f[3] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert f[4] == pytest.approx(0.1) and f[5] == pytest.approx(0.1)
    paper = TrainConfig.preset("paper")
    assert paper.optim.lr == 1.08e-4 and paper.optim.betas == (0.9, 0.95) and paper.optim.weight_decay == 1.08e-5
    assert paper.optim.grad_clip_value == 1.0 and paper.data.num_frames == 64 and paper.data.num_samples == 112_896


def test_weight_decay_only_on_matrices():
    cfg = tiny_cfg()
    model = make_model(cfg)
    opt = build_optimizer(model, cfg)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == cfg.optim.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(no_decay["params"]) > 0  # norms and the conv biases


def _run(cfg: TrainConfig, out, data, resume: bool = False) -> Trainer:
    tr = Trainer(cfg, out, make_model(cfg), data, record_history=True)
    if resume:
        tr.resume(out / "last.pt")
    tr.fit()
    return tr


def test_resume_is_bit_identical(tmp_path):
    data = PatternWindows(5)  # 5 clips, batch 2: epochs roll over mid-run (2 batches per epoch)
    cfg = tiny_cfg("max_steps=6", "grad_accum=1", "model_overrides=[visual_dim=32, cond_drop=0.5]")
    straight = _run(cfg, tmp_path / "a", data)
    half = _run(cfg.replace(max_steps=3), tmp_path / "b", data)
    assert (tmp_path / "b" / "last.pt").exists()
    resumed = _run(cfg, tmp_path / "b", data, resume=True)
    losses_a = [h["loss"] for h in straight.history]
    losses_b = [h["loss"] for h in half.history] + [h["loss"] for h in resumed.history]
    assert losses_a == losses_b, (losses_a, losses_b)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert resumed.epoch == straight.epoch and resumed.batch_in_epoch == straight.batch_in_epoch
    assert straight.epoch >= 2
    # the metrics CSV of the resumed run has one row per step, without duplicates
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [int(r["step"]) for r in rows if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "b" / "loss_curve.png").stat().st_size > 0
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ck["training"]["step"] == 6 and ck["config"]["n_layer"] == 2
    assert ck["training"]["train_config"]["max_steps"] == 6
    from vaura.checkpoint import load_checkpoint as load_for_generation

    model, meta = load_for_generation(tmp_path / "b" / "last.pt")  # what `vaura generate` reads
    assert meta["step"] == 6 and all(torch.equal(v, sb[k]) for k, v in model.state_dict().items())
    # changing the recipe on resume is refused
    bad = Trainer(cfg.with_overrides(["optim.lr=1.0"]), tmp_path / "b", make_model(cfg), data)
    with pytest.raises(ConfigError, match="optim.lr"):
        bad.resume(tmp_path / "b" / "last.pt")


def test_resume_refuses_other_data_or_frozen_models(tmp_path):
    """Resuming on other data (or features of another encoder / codec) is not an exact resume: refused, where it
    used to continue silently."""
    data = PatternWindows(4)
    cfg = tiny_cfg("max_steps=1")
    meta = {"data": str(tmp_path / "cache"), "val_data": None, "encoder": {"checksum": "e1"},
            "codec": {"checksum": "c1"}}
    (tmp_path / "cache").mkdir()
    Trainer(cfg, tmp_path / "r", make_model(cfg), data, metadata=meta).fit()
    last = tmp_path / "r" / "last.pt"
    for change, match in ((dict(data=str(tmp_path / "other")), "--data was"),
                          (dict(encoder={"checksum": "e2"}), "encoder weights differ"),
                          (dict(codec={"checksum": "c2"}), "codec weights differ")):
        tr = Trainer(cfg.replace(max_steps=2), tmp_path / "r", make_model(cfg), data, metadata={**meta, **change})
        with pytest.raises(ConfigError, match=match):
            tr.resume(last)
    # the same folder named by another path is the same data
    same = {**meta, "data": str(tmp_path / "r" / ".." / "cache")}
    tr = Trainer(cfg.replace(max_steps=2), tmp_path / "r", make_model(cfg), data, metadata=same)
    tr.resume(last)
    assert tr.step == 1
    # weights staged at another path: the checksums decide, not the paths
    real = cfg.replace(debug_weights=False, encoder_checkpoint="/a/avclip.pt", codec_checkpoint="/a/dac.pth")
    Trainer(real, tmp_path / "w", make_model(cfg), data, metadata=meta).fit()
    staged = real.replace(max_steps=2, encoder_checkpoint="/scratch/avclip.pt", codec_checkpoint="/scratch/dac.pth")
    tr = Trainer(staged, tmp_path / "w", make_model(cfg), data, metadata=meta)
    tr.resume(tmp_path / "w" / "last.pt")
    assert tr.step == 1


def test_grad_accumulation_equals_a_bigger_batch(tmp_path):
    data = PatternWindows(8)
    big = _run(tiny_cfg("max_steps=2", "data.batch_size=4"), tmp_path / "big", data)
    acc = _run(tiny_cfg("max_steps=2", "data.batch_size=2", "grad_accum=2"), tmp_path / "acc", data)
    # not the same samples per micro-batch order, but the same global batch: losses agree to rounding
    assert [h["loss"] for h in big.history] == pytest.approx([h["loss"] for h in acc.history], abs=1e-5)


def test_validation_best_k_and_nonfinite_guard(tmp_path):
    data = PatternWindows(4)
    cfg = tiny_cfg("max_steps=4", "val_every=1", "keep_best=2", "ckpt_every=2")
    tr = Trainer(cfg, tmp_path / "v", make_model(cfg), data, data)
    res = tr.fit()
    best = sorted(p.name for p in (tmp_path / "v").glob("best-*.pt"))
    assert len(best) == 2 and len(tr.best) == 2 and tr.best[0][0] <= tr.best[1][0]
    assert {b[2] for b in tr.best} == set(best)
    rows = list(csv.DictReader(open(tmp_path / "v" / "metrics.csv")))
    assert sum(r["kind"] == "val" for r in rows) == 4
    assert res["val"]["loss"] < math.log(1024)

    class Poisoned(PatternWindows):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["visual"] = torch.full_like(item["visual"], float("nan"))
            return item

    cfg = tiny_cfg("max_steps=5", "max_nonfinite=2")
    tr = Trainer(cfg, tmp_path / "n", make_model(cfg), Poisoned(4))
    with pytest.raises(NonFiniteLossError, match="max_nonfinite=2"):
        tr.fit()
    assert tr.nonfinite == 3 and tr.step == 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps(tmp_path, precision):
    """Autocast runs (on CPU here, CUDA in real runs); fp16 adds a GradScaler whose state is checkpointed."""
    cfg = tiny_cfg("max_steps=2", f"precision={precision}")
    tr = _run(cfg, tmp_path / precision, PatternWindows(4))
    assert all(math.isfinite(h["loss"]) for h in tr.history) and tr.step == 2
    assert tr.scaler.is_enabled() == (precision == "fp16")
    assert load_checkpoint(tmp_path / precision / "last.pt")["training"]["scaler"] == tr.scaler.state_dict()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, bad: frozenset = frozenset()) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        cfg = tiny_cfg("max_steps=3", "data.batch_size=2")
        data = WithBadClips(8, set(bad)) if bad else PatternWindows(8)
        tr = Trainer(cfg, out, make_model(cfg), data, dist_info=info, record_history=True,
                     find_unused_parameters=True)
        tr.fit()
        torch.save({"losses": [h["loss"] for h in tr.history], "state": tr.model.state_dict()},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("with_bad_clip", [False, True])
def test_ddp_two_processes_match_single_process(tmp_path, with_bad_clip):
    """Two gloo processes with batch 2 take the global batches of one process with batch 4. With a bad clip in
    rank 0's half of the first global batch, rank 0 has 1 sample and rank 1 has 2: the step is still the mean
    over the 3 samples (DDP's plain gradient average weighted rank 0's lone sample double)."""
    from vaura.train.data import GlobalBatchSampler

    bad = frozenset({list(GlobalBatchSampler(8, 4, True, seed=0))[0][0]}) if with_bad_clip else frozenset()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp"), bad), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])  # replicas identical
    assert r0["losses"] == r1["losses"]
    single = _run(tiny_cfg("max_steps=3", "data.batch_size=4"), tmp_path / "single",
                  WithBadClips(8, set(bad)) if bad else PatternWindows(8))
    assert r0["losses"] == pytest.approx([h["loss"] for h in single.history], abs=1e-5)
    ss = single.model.state_dict()
    assert max((ss[k] - r0["state"][k]).abs().max().item() for k in ss) < 1e-4
    if with_bad_clip:
        assert [h["samples"] for h in single.history][0] == 3
        assert max((ss[k] - r0["state"][k]).abs().max().item() for k in ss) < 1e-6
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    tr = ck["training"]
    assert tr["world_size"] == 2 and len(tr["rng"]) == 2 and len(tr["positions"]) == 2


def test_dist_info_defaults():
    info = DistInfo()
    assert info.is_main and not info.distributed and info.device.type == "cpu"


@pytest.mark.slow
def test_tiny_model_overfits_and_generation_follows_the_video(tmp_path):
    """Loss falls by a large factor on 4 clips; greedy generation from clip 0's features reproduces most of its
    training tokens, while clip 1's features give clip 1's tokens instead (the condition is used)."""
    from vaura.sampler import SamplingParams, generate

    frames = 32
    data = PatternWindows(4, frames=frames, period=8, seed=3)
    cfg = tiny_cfg("max_steps=200", "data.batch_size=4", "log_every=20", "optim.lr=5e-3",
                   "model_overrides=[visual_dim=32, cond_drop=0.1]")
    tr = _run(cfg, tmp_path / "fit", data)
    first, last = tr.history[0]["loss"], tr.history[-1]["loss"]
    assert first == pytest.approx(math.log(1024), abs=1e-4)  # zero heads at init
    assert last < first / 20, (first, last)
    model = tr.model.eval()
    out = generate(model, data.visual[:2], frames, SamplingParams(cfg_scale=1.0, use_sampling=False))  # no CFG
    same = (out.codes[0] == data.codes[0]).float().mean().item()
    other = (out.codes[1] == data.codes[1]).float().mean().item()
    crossed = (out.codes[1] == data.codes[0]).float().mean().item()
    assert same > 0.9 and other > 0.9, (same, other)
    assert crossed < 0.1, crossed


class WithBadClips(PatternWindows):
    """`PatternWindows` where the clips in `bad` are unusable (what the on-the-fly dataset gives for a bad file)."""

    def __init__(self, n: int, bad: set[int]) -> None:
        super().__init__(n)
        self.bad = bad

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "clip_id": f"c{i}", "bad": "broken"} if i in self.bad else super().__getitem__(i)


def test_grad_accumulation_weights_samples_when_a_micro_batch_is_smaller(tmp_path):
    """A bad clip makes one micro-batch smaller: the step must still be the mean over the global batch's samples
    (it was the mean of the micro-batch means, weighting the lone sample of the short micro-batch double)."""
    from vaura.train.data import GlobalBatchSampler

    cfg = tiny_cfg("max_steps=2", "data.batch_size=4")
    first = list(GlobalBatchSampler(8, 4, True, seed=cfg.seed))[0]
    data = WithBadClips(8, {first[0]})  # the first micro-batch of 2 keeps 1 clip, the second keeps 2
    big = _run(cfg, tmp_path / "big", data)
    acc = _run(tiny_cfg("max_steps=2", "data.batch_size=2", "grad_accum=2"), tmp_path / "acc", data)
    assert [h["samples"] for h in acc.history] == [h["samples"] for h in big.history] == [3, 4]
    assert [h["loss"] for h in acc.history] == pytest.approx([h["loss"] for h in big.history], abs=1e-6)
    sb, sa = big.model.state_dict(), acc.model.state_dict()
    assert max((sb[k] - sa[k]).abs().max().item() for k in sb) < 1e-6


def test_a_training_set_without_usable_clips_stops_with_an_error(tmp_path):
    """Every clip bad (e.g. all shorter than the window): a `DataError` after an epoch, where the trainer used to
    skip empty batches for ever."""
    from vaura.train.data import DataError

    class AllBad(WithBadClips):
        calls = 0

        def __getitem__(self, i: int) -> dict:
            AllBad.calls += 1
            if AllBad.calls > 200:  # the old endless loop: fail instead of hanging the test
                raise RuntimeError("still looking for a usable clip")
            return super().__getitem__(i)

    cfg = tiny_cfg("max_steps=1")
    tr = Trainer(cfg, tmp_path / "r", make_model(cfg), AllBad(5, set(range(5))))
    with pytest.raises(DataError, match="no usable clip.*broken"):
        tr.fit()
    assert AllBad.calls <= 5


@pytest.mark.parametrize("override, match", [("n_codebooks=4", "n_codebooks=4"),
                                             ("visual_tokens=16", "visual_tokens=16"),
                                             ("visual_dim=64", "visual_dim=64"),
                                             ("rope_len=30", "rope_len=30")])
def test_data_that_does_not_fit_the_model_is_a_config_error(tmp_path, override, match):
    """A cache (or codec / encoder) and a model config that disagree: a `ConfigError` naming the field, where the
    run ended in an assertion inside the model (or, for the visual tokens, only on a step that dropped the
    condition)."""
    cfg = tiny_cfg("max_steps=1", f"model_overrides=[visual_dim=32, cond_drop=0.0, {override}]")
    tr = Trainer(cfg, tmp_path / "r", make_model(cfg), PatternWindows(4))
    with pytest.raises(ConfigError, match=f"does not fit the model: .*{match}"):
        tr.fit()
    if override == "visual_tokens=16":
        tr.val_set = PatternWindows(4)
        with pytest.raises(ConfigError, match="visual_tokens=16"):
            tr.validate()


def test_a_codec_that_does_not_fit_the_model_is_a_config_error():
    from vaura.train.frozen import build_training_model

    class Codec:
        def quantizer_tensors(self):
            return torch.zeros(9, 1024, 8), torch.zeros(9, 32)

    cfg = tiny_cfg("model_overrides=[visual_dim=32, n_codebooks=4]")
    with pytest.raises(ConfigError, match="codec has 9 codebooks.*n_codebooks=4"):
        build_training_model(cfg, Codec(), 32)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_a_stop_signal_saves_last_pt_after_the_step_and_resume_is_exact(tmp_path, signame):
    """Preemption: SIGTERM (or SLURM's --signal=USR1 warning) arriving mid-step ends the run after that step with
    last.pt saved (it used to kill the process and lose every step since the last periodic checkpoint); the
    resumed run's losses and weights equal an uninterrupted run's."""
    import signal

    class Preempted(PatternWindows):
        fire_at: int | None = None  # the item access that delivers the signal

        def __getitem__(self, i: int) -> dict:
            Preempted.calls = getattr(Preempted, "calls", 0) + 1
            if Preempted.calls == self.fire_at:
                os.kill(os.getpid(), getattr(signal, signame))
            return super().__getitem__(i)

    cfg = tiny_cfg("max_steps=6", "ckpt_every=100", "model_overrides=[visual_dim=32, cond_drop=0.5]")
    straight = _run(cfg, tmp_path / "a", PatternWindows(5))
    data = Preempted(5)
    data.fire_at = 6  # batch 2: during step 3
    before = signal.getsignal(getattr(signal, signame))
    tr = Trainer(cfg, tmp_path / "b", make_model(cfg), data, record_history=True)
    res = tr.fit()
    assert res["stopped_by"] == signame and res["step"] == 3 and tr.stopped_by == signame
    assert signal.getsignal(getattr(signal, signame)) is before  # handlers restored
    assert load_checkpoint(tmp_path / "b" / "last.pt")["training"]["step"] == 3
    data.fire_at = None
    resumed = _run(cfg, tmp_path / "b", data, resume=True)
    assert [h["loss"] for h in tr.history + resumed.history] == [h["loss"] for h in straight.history]
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_periodic_checkpoints_are_kept(tmp_path):
    """keep_every=N keeps step-XXXXXXXX.pt every N steps beside last.pt (there was only last.pt, rewritten, and
    best-*.pt with validation data); each holds its own step, whatever later writes of last.pt do; a checkpoint
    written before the field existed still resumes."""
    cfg = tiny_cfg("max_steps=5", "keep_every=2")
    _run(cfg, tmp_path / "k", PatternWindows(4))
    assert sorted(p.name for p in (tmp_path / "k").glob("*.pt")) == ["last.pt", "step-00000002.pt",
                                                                      "step-00000004.pt"]
    steps = {n: load_checkpoint(tmp_path / "k" / n)["training"]["step"] for n in ("step-00000002.pt",
                                                                                   "step-00000004.pt", "last.pt")}
    assert steps == {"step-00000002.pt": 2, "step-00000004.pt": 4, "last.pt": 5}
    old = torch.load(tmp_path / "k" / "step-00000004.pt", weights_only=True)
    del old["training"]["train_config"]["keep_every"]  # as written before keep_every existed
    torch.save(old, tmp_path / "k" / "last.pt")
    tr = Trainer(cfg.replace(max_steps=6), tmp_path / "k", make_model(cfg), PatternWindows(4))
    tr.resume(tmp_path / "k" / "last.pt")
    assert tr.step == 4


def test_tensorboard_hides_what_a_killed_run_logged_past_its_checkpoint(tmp_path):
    """metrics.csv drops the rows a killed run wrote after its last checkpoint; TensorBoard now hides the same
    events (purge_step) instead of showing two values per step for them."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = PatternWindows(4)
    cfg = tiny_cfg("max_steps=5", "ckpt_every=3")
    tr = _run(cfg, tmp_path / "r", data)  # last.pt at step 5; rewind it to step 3 as a kill after step 5 would
    tr._tb.close()
    ck = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    three = _run(cfg.replace(max_steps=3), tmp_path / "three", data)
    three._tb.close()
    (tmp_path / "r" / "last.pt").write_bytes((tmp_path / "three" / "last.pt").read_bytes())
    assert ck["training"]["step"] == 5
    resumed = _run(cfg.replace(max_steps=4), tmp_path / "r", data, resume=True)
    resumed._tb.close()
    acc = EventAccumulator(str(tmp_path / "r" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]


class KillerWindows(WithBadClips):
    """`PatternWindows` whose clips in `kill` kill the DataLoader worker loading them (a decoder segfault, the OOM
    killer); loaded in the main process they are plain bad clips."""

    def __init__(self, n: int, kill: set[int]) -> None:
        super().__init__(n, set())
        self.kill = kill
        self.clip_ids = [f"c{i}" for i in range(n)]  # as `CachedWindows` names its clips

    def __getitem__(self, i: int) -> dict:
        if i in self.kill:
            import signal

            if torch.utils.data.get_worker_info() is not None:
                os.kill(os.getpid(), signal.SIGKILL)
            return {"index": i, "clip_id": f"c{i}", "bad": "broken"}
        return super().__getitem__(i)


def test_a_decode_worker_killed_by_a_signal_costs_only_its_clip(tmp_path, caplog):
    """A worker killed while loading clip 3 used to end the run ("DataLoader worker ... is killed by signal"). Now
    the loader restarts, clip 3 is a bad clip (counted, logged, recorded in the checkpoint) and the run takes the
    same steps as one where clip 3 is an ordinary bad clip."""
    from vaura.train.data import GlobalBatchSampler

    cfg = tiny_cfg("max_steps=6", "data.num_workers=2")  # 5 clips, batch 2: 2 batches per epoch, 3 epochs
    with caplog.at_level("WARNING", logger="vaura.train.loop"):
        tr = _run(cfg, tmp_path / "k", KillerWindows(5, {3}))
    drawn = sum(3 in sum(GlobalBatchSampler(5, 2, True, seed=cfg.seed, epoch=e), []) for e in range(3))
    assert drawn >= 1 and tr.step == 6 and tr.bad_clips == drawn
    # torch says "is killed by signal: Killed." or, when its status check finds the worker first, "exited
    # unexpectedly"
    assert "DataLoader worker (pid" in caplog.text and "clip c3 is a bad clip" in caplog.text
    plain = _run(tiny_cfg("max_steps=6"), tmp_path / "p", WithBadClips(5, {3}))
    assert [h["loss"] for h in tr.history] == [h["loss"] for h in plain.history]
    assert [h["samples"] for h in tr.history] == [h["samples"] for h in plain.history]
    rows = list(csv.DictReader(open(tmp_path / "k" / "metrics.csv")))
    assert int(rows[-1]["bad_clips"]) == drawn
    crashed = load_checkpoint(tmp_path / "k" / "last.pt")["training"]["crashed_clips"]
    assert [i for i, _ in crashed] == [3] and "decode worker died: DataLoader worker" in crashed[0][1]


def test_decode_workers_dying_every_time_end_the_run(tmp_path):
    """Workers that die on every clip (e.g. each one OOM-killed): a `DataError` after data.max_worker_deaths deaths
    in a row, instead of restarting for ever."""
    from vaura.train.data import DataError

    cfg = tiny_cfg("max_steps=2", "data.num_workers=2", "data.max_worker_deaths=2")
    tr = Trainer(cfg, tmp_path / "r", make_model(cfg), KillerWindows(6, set(range(6))))
    with pytest.raises(DataError, match="died 2 times in a row.*max_worker_deaths=2"):
        tr.fit()
    assert tr.step == 0


class SpikyWindows(PatternWindows):
    """Every `every`-th batch (of 2 items, loaded in order in the main process) has NaN visual features."""

    def __init__(self, n: int, every: int) -> None:
        super().__init__(n)
        self.every, self.calls = every, 0

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        if (self.calls // 2) % self.every == 0:
            item["visual"] = torch.full_like(item["visual"], float("nan"))
        self.calls += 1
        return item


def test_max_nonfinite_counts_skipped_steps_in_a_row_and_a_fraction_of_all(tmp_path):
    """Scattered non-finite steps no longer add up to max_nonfinite (it stopped a long run after 20 rare spikes
    over any number of steps): it limits skipped steps in a row; max_nonfinite_fraction limits their share of all
    steps tried, from more than max_nonfinite skips on."""
    cfg = tiny_cfg("max_steps=6", "max_nonfinite=2", "max_nonfinite_fraction=0.5")
    tr = Trainer(cfg, tmp_path / "a", make_model(cfg), SpikyWindows(8, every=3), record_history=True)
    tr.fit()  # batches 0, 3, 6 skipped: 3 skips, never 2 in a row, a third of the 9 steps tried
    assert tr.step == 6 and tr.nonfinite == 3 and [h["skipped"] for h in tr.history].count(True) == 3
    assert load_checkpoint(tmp_path / "a" / "last.pt")["training"]["counters"]["nonfinite"] == 3
    cfg = cfg.replace(max_nonfinite_fraction=0.2)
    tr = Trainer(cfg, tmp_path / "b", make_model(cfg), SpikyWindows(8, every=3))
    with pytest.raises(NonFiniteLossError, match="3 of 7 steps.*max_nonfinite_fraction=0.2"):
        tr.fit()
    with pytest.raises(ConfigError, match="max_nonfinite_fraction"):
        tiny_cfg("max_nonfinite_fraction=0")
