"""KV-cached classifier-free-guided generation over the delayed pattern (the release's ``VAURAModel.generate``).

The loop fills a pattern sequence ``[B, K, N + K]`` step by step: step ``s`` is predicted from the prefix
``[..., :s]``. The original recomputes the whole prefix at every step; here each step feeds only the new
positions through a `KVCache` (``use_kv_cache=False`` gives the original full recomputation, for checks and
benchmarks). Single-position steps can run with static shapes (`Transformer.decode_step`), which on CUDA are
captured in a CUDA graph once per generation and replayed: one launch per step instead of ~1000 small kernels.
The conditional and null branches run as one batch ``[cond (B); null (B)]`` and are combined on raw
logits as ``null + (cond - null) * cfg_scale``, then sampled with temperature, top-p or top-k, or greedily.

Rows of one batch may belong to different clips: each row has its own frame count (a row whose clip is shorter
finishes early and its later steps are ignored) and, with `RowStreams`, its own counter-based random stream
keyed by the caller's identity of the row, so a row's tokens do not depend on which other rows share the batch
(`vaura.generate.generate_batch` builds on this).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vaura.delay import pattern_index, revert_pattern
from vaura.model import KVCache, Transformer
from vaura.packed import is_packed
from visualsound.errors import ToolkitError

log = logging.getLogger(__name__)


class SamplingError(ToolkitError, ValueError):
    """Invalid sampling parameters or generation request."""

UNKNOWN = -1


@dataclass(frozen=True)
class SamplingParams:
    """Sampling knobs; defaults are the release's (``scripts/generate.py`` with the released config).

    ``cfg_scale`` s >= 0 combines the logits as ``null + (cond - null) * s``: 1 is plain conditional sampling (one
    branch), 0 unconditional.
    """

    cfg_scale: float = 6.0
    top_k: int = 128
    top_p: float = 0.0
    temperature: float = 1.0
    use_sampling: bool = True

    def __post_init__(self) -> None:
        if self.cfg_scale < 0 or self.temperature < 0 or self.top_k < 0 or not 0.0 <= self.top_p <= 1.0:
            raise SamplingError(f"invalid sampling parameters {self}: cfg_scale, temperature and top_k must be "
                                f">= 0, top_p in [0, 1]")


@dataclass
class GenerationOutput:
    """``codes [B, K, N]`` (reverted) and the filled pattern ``sequence [B, K, N + K]``."""

    codes: torch.Tensor
    sequence: torch.Tensor


StepCallback = Callable[[int, torch.Tensor, torch.Tensor | None, torch.Tensor], None]
STEP_MODES = ("auto", "dynamic", "static", "graph")


_COMPILED: dict[object, Callable[..., torch.Tensor]] = {}


def compiled_decode_step(model: Transformer, backend: str = "inductor") -> Callable[..., torch.Tensor]:
    """``torch.compile`` of `Transformer.decode_step` bound to `model`: ``(tokens, vis, cache, pos) -> logits``.

    Inductor fuses the step's ~1000 small elementwise kernels into a few dozen; compiling costs time once per
    process and shape (`generate` gives a compiled step a cache of ``cfg.rope_len`` positions, so the shapes do
    not change with ``n_frames``). The compiled function is made once per backend and holds no reference to the
    model (Dynamo keeps the compiled code of `decode_step`, guarded on its inputs), so models can be freed.
    """
    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(Transformer.decode_step, fullgraph=True, dynamic=False, backend=backend)
    return functools.partial(_COMPILED[backend], model)


class StaticStep:
    """Runs `Transformer.decode_step` on fixed input buffers, optionally as a captured CUDA graph.

    Building it with ``graph=True`` warms the step up on a side stream and captures it (once per `generate`
    call, i.e. per window); both write throw-away keys/values at cache position 0, which the first real step
    overwrites before any step reads them, so the stepper must be built before the cache holds data.
    """

    def __init__(self, model: Transformer, vis: torch.Tensor, cache: KVCache, graph: bool,
                 compile: bool = False) -> None:
        if cache.length != 0:
            raise SamplingError(f"StaticStep must be built on an empty cache (length {cache.length})")
        rows, k, dev = vis.shape[0], model.cfg.n_codebooks, vis.device
        self.vis, self.cache = vis, cache
        self.step_fn = compiled_decode_step(model) if compile else model.decode_step
        self.tokens = torch.full((rows, k, 1), model.cfg.special_token, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        if graph:
            if dev.type != "cuda":
                raise SamplingError(f"CUDA graphs need a CUDA device, the model is on {dev}")
            # everything on the model's GPU, whichever GPU is current (the default capture stream belongs to
            # the GPU that was current when it was first made, so capture on an explicit stream of `dev`)
            with torch.cuda.device(dev):
                side = torch.cuda.Stream(dev)
                side.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(side):
                    for _ in range(2):
                        self.step_fn(self.tokens, vis, cache, self.pos)
                torch.cuda.current_stream(dev).wait_stream(side)
                self.graph = torch.cuda.CUDAGraph()
                # thread-local capture: decode threads (`vaura.generate.read_clip`) may use the GPU meanwhile
                with torch.cuda.graph(self.graph, stream=torch.cuda.Stream(dev), capture_error_mode="thread_local"):
                    self.out = self.step_fn(self.tokens, vis, cache, self.pos)

    def __call__(self, tokens: torch.Tensor, position: int) -> torch.Tensor:
        """tokens ``[rows, K, 1]`` at ``position`` -> logits ``[rows, K, 1, card]`` (a fresh tensor)."""
        self.tokens.copy_(tokens)
        self.pos.fill_(position)
        if self.graph is None:
            return self.step_fn(self.tokens, self.vis, self.cache, self.pos)
        with torch.cuda.device(self.pos.device):
            self.graph.replay()
        return self.out.clone()


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor | int, c: int) -> torch.Tensor | int:
    """``(x * c) mod 2**32`` for ``0 <= x, c < 2**32`` without int64 overflow (two 16-bit halves of `c`)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def hash32(x: torch.Tensor | int) -> torch.Tensor | int:
    """A 32-bit integer hash (the ``lowbias32`` finaliser: xor-shift / multiply rounds) of values in
    ``[0, 2**32)``, elementwise on int64 tensors or on Python ints (the same values)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class RowStreams:
    """Counter-based random numbers, one stream per batch row, keyed by the caller's identity of the row.

    `keys` holds one tuple per row (e.g. ``(clip id, seed, sample index, window index)``); its 64-bit
    BLAKE2b digest of ``repr(key)`` seeds the row's stream. `uniforms` gives the row's numbers for every loop step
    and codebook as a pure function of (key, step, codebook), computed with integer hashes on the device: no
    generator state is shared between rows, so a row draws the same numbers whatever other rows, in whatever
    order, share its batch (and whether it is generated alone). Not a cryptographic generator: a sampling one.
    """

    def __init__(self, keys: Sequence[tuple], device: torch.device | str = "cpu") -> None:
        digests = [int.from_bytes(hashlib.blake2b(repr(tuple(k)).encode(), digest_size=8).digest(), "little")
                   for k in keys]
        self.keys = [tuple(k) for k in keys]
        self.lo = torch.tensor([d & _M32 for d in digests], dtype=torch.int64, device=device)
        self.hi = torch.tensor([d >> 32 for d in digests], dtype=torch.int64, device=device)

    def __len__(self) -> int:
        return len(self.keys)

    def uniforms(self, n_steps: int, n_codebooks: int) -> torch.Tensor:
        """Uniform numbers in (0, 1) for steps ``0 .. n_steps-1``: float64 ``[n_steps, B, K]`` with 48 random bits
        each."""
        assert n_codebooks < 64, f"{n_codebooks} codebooks: the counter holds at most 63"
        dev = self.lo.device
        counter = (torch.arange(n_steps, device=dev)[:, None, None] * 64
                   + torch.arange(n_codebooks, device=dev)[None, None, :])  # [S, 1, K]
        h1 = hash32(hash32(self.lo[None, :, None] ^ counter) ^ self.hi[None, :, None])  # [S, B, K]
        h2 = hash32(h1 ^ self.lo[None, :, None] ^ 0x5BD1E995)
        bits = (h1 >> 8) * (1 << 24) + (h2 >> 8)  # 48 bits
        return (bits.double() + 0.5) * 2.0 ** -48


def sample_with_uniforms(logits: torch.Tensor, params: SamplingParams, u: torch.Tensor) -> torch.Tensor:
    """Pick one token per row of logits ``[B, K, V]`` with one uniform number per row ``u [B, K]`` (float64 in
    (0, 1)) by inverting the cumulative distribution (in float64) of the candidates: top-k keeps exactly the k
    most probable tokens, top-p the smallest prefix of the sorted probabilities whose mass reaches ``top_p``
    (the token that crosses it included, as `sample_next`), neither = every token. Exact for the distribution;
    only integer comparisons and sums along each row, so a row's token depends on that row alone.
    Returns ``[B, K]`` int64."""
    if not params.use_sampling or params.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    index = None
    if params.top_p > 0:
        cand, index = probs.sort(dim=-1, descending=True)
        cand = cand * ((cand.cumsum(-1) - cand) <= params.top_p)
    elif params.top_k > 0:
        cand, index = probs.topk(min(params.top_k, probs.shape[-1]), dim=-1)
    else:
        cand = probs
    cdf = cand.double().cumsum(-1)
    target = u * cdf[..., -1]
    pick = (cdf <= target[..., None]).sum(-1, keepdim=True).clamp(max=cand.shape[-1] - 1)
    return (pick if index is None else index.gather(-1, pick)).squeeze(-1)


class StepperPool:
    """Reuses KV caches and static decode steps (CUDA graphs) across `generate` calls of the same shape.

    Capturing a step as a CUDA graph costs a few step-times (warm-up and capture); chunked generation of a long
    clip calls `generate` once per window with the same batch rows and cache length, so one pool passed to every
    call captures once. A reused cache is zeroed and its visual buffer refilled before each call.
    """

    def __init__(self) -> None:
        self._items: dict[tuple, tuple[KVCache, StaticStep]] = {}

    def get(self, model: Transformer, vis: torch.Tensor, cache_len: int, graph: bool, compile: bool
            ) -> tuple[KVCache, StaticStep]:
        key = (id(model), tuple(vis.shape), vis.dtype, str(vis.device), cache_len, graph, compile)
        if key not in self._items:
            cache = KVCache(model.cfg, vis.shape[0], cache_len, vis.device, next(model.parameters()).dtype)
            self._items[key] = (cache, StaticStep(model, vis.clone(), cache, graph=graph, compile=compile))
        cache, stepper = self._items[key]
        for buf in (*cache.keys, *cache.values):
            buf.zero_()
        cache.length = 0
        stepper.vis.copy_(vis)
        return cache, stepper

    def clear(self) -> None:
        self._items.clear()


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of probabilities ``[R, V]`` -> ``[R, 1]``: exactly ``torch.multinomial(probs, 1,
    generator=generator)`` (the same exponential race, ``argmax(probs / Exp(1))``, drawing the same random numbers)
    without its validity check, which copies a flag to the host and so stalls the GPU at every step. Sampling
    checks the logits once per generation instead (`generate`)."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / q).argmax(-1, keepdim=True)


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """Pick one token per row of logits ``[..., V]`` -> ``[...]`` (int64)."""
    if not params.use_sampling or params.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    if params.top_p > 0:
        sorted_p, order = flat.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(-1)
        sorted_p = sorted_p * ((cum - sorted_p) <= params.top_p)
        sorted_p = sorted_p / sorted_p.sum(-1, keepdim=True)
        pick = draw(sorted_p, generator)
        tokens = order.gather(-1, pick)
    else:
        if params.top_k > 0:
            kth = flat.topk(min(params.top_k, flat.shape[-1]), dim=-1).values[:, -1:]
            flat = flat * (flat >= kth)
            flat = flat / flat.sum(-1, keepdim=True)
        tokens = draw(flat, generator)
    return tokens.reshape(logits.shape[:-1])


@torch.no_grad()
def generate(model: Transformer, features: torch.Tensor, n_frames: int | Sequence[int] | torch.Tensor,
             params: SamplingParams = SamplingParams(), prompt: torch.Tensor | None = None,
             generator: torch.Generator | None = None, use_kv_cache: bool = True,
             on_step: StepCallback | None = None, step_mode: str = "auto", compile_step: bool = False,
             streams: RowStreams | None = None, cache_len: int | None = None, pool: StepperPool | None = None
             ) -> GenerationOutput:
    """Generate ``n_frames`` DAC frames for each clip.

    features: visual features ``[B, N, 768]``; prompt: optional known codes ``[B, K, P]`` (P < n_frames) that
    are kept and continued (chunked generation of long videos). ``n_frames`` may differ per row (a sequence or
    int64 tensor ``[B]``; 0 = a padding row that generates nothing): the batch runs ``max(n_frames) + K`` steps
    and a shorter row's codes past its own length are the special token. ``on_step(step, cond, null, guided)``
    receives the last-position logits ``[B, K, V]`` of every loop step (``null`` is None without CFG).
    Random numbers come from `generator` (torch's, shared by the rows: the draws equal ``torch.multinomial``'s)
    or, with `streams`, from each row's own counter-based stream (`sample_with_uniforms`; a row's tokens then
    do not depend on the other rows). ``cache_len`` sets the KV cache's positions (default ``max(n_frames) + K``,
    the RoPE length with ``compile_step``); the static and graph steps attend over the whole buffer, so callers
    that need a row's logits to be the same whatever the batch's lengths pass a fixed one. `pool` reuses caches and
    captured steps across calls of the same shape (`StepperPool`).
    ``step_mode`` (with the KV cache) runs single-position steps ``"dynamic"`` (`Transformer.forward_tokens`),
    ``"static"`` (`Transformer.decode_step`) or ``"graph"`` (decode_step captured in a CUDA graph);
    ``"auto"`` is graph on CUDA, elsewhere static with ``compile_step``, else dynamic. ``compile_step``
    compiles the static step with ``torch.compile`` first (fewer, fused kernels; the compilation costs time once
    per process and batch size: its KV cache spans ``cfg.rope_len`` whatever ``n_frames`` is).
    Returns codes ``[B, K, n_frames]`` and the filled pattern ``[B, K, n_frames + K]``.
    """
    if step_mode not in STEP_MODES:
        raise SamplingError(f"step_mode must be one of {STEP_MODES}, got {step_mode!r}")
    cfg = model.cfg
    assert features.dim() == 3, f"features must be [B, N, {cfg.visual_dim}], got {tuple(features.shape)}"
    if model.training:
        raise SamplingError("generate() needs the model in eval mode (call model.eval())")
    b, k, device = features.shape[0], cfg.n_codebooks, features.device
    lengths = [int(n_frames)] * b if isinstance(n_frames, int) else [int(n) for n in n_frames]
    if len(lengths) != b:
        raise SamplingError(f"{len(lengths)} frame counts for a batch of {b} rows")
    n_max = max(lengths)
    if n_max < 1 or min(lengths) < 0 or n_max + k > cfg.rope_len:
        raise SamplingError(f"n_frames must be in [1, {cfg.rope_len - k}] (one 2.56 s window; 0 for a padding "
                            f"row), got {sorted(set(lengths))}")
    if streams is not None and (generator is not None or len(streams) != b):
        raise SamplingError(f"streams need one key per row ({len(streams)} for {b} rows) and no generator")
    frame, valid = pattern_index(k, n_max, device)
    if min(lengths) < n_max:  # rows of other lengths: each row's own cells
        n_row = torch.tensor(lengths, device=device)
        valid = valid[None] & (frame[None] < n_row[:, None, None])  # [B, K, S]
    else:
        valid = valid.expand(b, k, n_max + k)
    seq = torch.where(valid, UNKNOWN, cfg.special_token)
    if prompt is not None and prompt.shape[-1] > 0:
        short = [n for n in lengths if 0 < n <= prompt.shape[2]]
        assert prompt.shape[:2] == (b, k) and not short, (
            f"prompt {tuple(prompt.shape)} must be [B={b}, K={k}, P] with P below every row's n_frames {lengths}")
        in_prompt = valid & (frame < prompt.shape[2])
        known = torch.gather(prompt.to(device), 2, frame.clamp(0, prompt.shape[2] - 1).expand(b, k, -1))
        seq = torch.where(in_prompt, known, seq)

    # the guided logits equal the conditional ones only at scale 1; any other scale (0 = unconditional, (0, 1)
    # = between the two) needs the null branch
    use_cfg = params.cfg_scale != 1.0
    rows = 2 * b if use_cfg else b
    if use_cfg:
        null = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(device)
        vis = model.embed_visual(torch.cat([features, features]), null)
    else:
        vis = model.embed_visual(features)
    dtype = next(model.parameters()).dtype
    if step_mode == "auto":
        step_mode = "graph" if device.type == "cuda" else "static" if compile_step else "dynamic"
    if compile_step and (not use_kv_cache or step_mode == "dynamic"):
        raise SamplingError("compile_step compiles the static KV-cache step: it needs use_kv_cache=True and "
                            f"step_mode 'static', 'graph' or 'auto' (got {step_mode!r}, use_kv_cache={use_kv_cache})")
    if compile_step and is_packed(model):
        raise SamplingError("compile_step cannot trace oneDNN-packed weights: generate without compile_step, "
                            "or call vaura.packed.unpack_linears(model) first")
    # a compiled step is specialised to the cache's length: the full RoPE length keeps it one shape for every
    # n_frames (else each window length recompiles, and fullgraph compilation fails past Dynamo's recompile limit)
    if cache_len is None:
        cache_len = cfg.rope_len if compile_step else n_max + k
    if cache_len < n_max + k:
        raise SamplingError(f"cache_len {cache_len} is shorter than the {n_max + k} steps of {n_max} frames")
    cache, stepper = None, None
    if use_kv_cache and step_mode != "dynamic" and pool is not None:
        cache, stepper = pool.get(model, vis, cache_len, graph=step_mode == "graph", compile=compile_step)
    elif use_kv_cache:
        cache = KVCache(cfg, rows, cache_len, device, dtype)
        if step_mode != "dynamic":
            stepper = StaticStep(model, vis, cache, graph=step_mode == "graph", compile=compile_step)

    # a cell is filled only at its own step, so which steps have work is known now (one host sync, not one a step)
    steps_with_work = (seq == UNKNOWN).any(dim=1).any(dim=0).tolist()
    # every step's guided logits (divided by the temperature when sampling) finite; read once at the end
    finite = torch.ones((), dtype=torch.bool, device=device)
    sampling = params.use_sampling and params.temperature != 0
    live = None if min(lengths) > 0 else torch.tensor([n > 0 for n in lengths], device=device)[:, None, None]
    uniforms = streams.uniforms(n_max + k, k) if streams is not None and sampling else None
    for step in range(1, n_max + k):
        if not steps_with_work[step]:
            continue
        todo = seq[:, :, step] == UNKNOWN  # [B, K]
        prefix = seq[:, :, :step]
        if cache is not None:
            prefix = prefix[:, :, cache.length:]
        if use_cfg:
            prefix = torch.cat([prefix, prefix])
        if stepper is not None and prefix.shape[-1] == 1:
            logits = stepper(prefix, cache.length)
            cache.length += 1
        else:
            logits = model.forward_tokens(prefix, vis, cache, last_only=True)
        last = logits[:, :, -1].float()  # [rows, K, V]
        if use_cfg:
            cond, unc = last[:b], last[b:]
            guided = unc + (cond - unc) * params.cfg_scale
        else:
            cond, unc, guided = last, None, last
        if on_step is not None:
            on_step(step, cond, unc, guided)
        checked = guided if live is None else torch.where(live, guided, 0.0)  # padding rows are not looked at
        finite &= torch.isfinite(checked / params.temperature if sampling else checked).all()
        if uniforms is not None:
            nxt = sample_with_uniforms(guided, params, uniforms[step])
        else:
            nxt = sample_next(guided, params, generator)
        nxt = torch.where(valid[:, :, step], nxt, cfg.special_token)
        seq[:, :, step] = torch.where(todo, nxt, seq[:, :, step])
    if not bool(finite):
        raise SamplingError("non-finite logits (NaN or inf; with sampling: after dividing by the temperature "
                            f"{params.temperature}): check the weights, the inputs and the temperature")
    assert not (seq == UNKNOWN).any(), "generation left unknown cells"
    return GenerationOutput(codes=revert_pattern(seq), sequence=seq)
