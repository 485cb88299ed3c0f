"""KV-cached classifier-free-guided generation over the delayed pattern (the release's ``VAURAModel.generate``).

The loop fills a pattern sequence ``[B, K, N + K]`` step by step: step ``s`` is predicted from the prefix
``[..., :s]``. The original recomputes the whole prefix at every step; here each step feeds only the new
positions through a `KVCache` (``use_kv_cache=False`` gives the original full recomputation, for checks and
benchmarks). Single-position steps can run with static shapes (`Transformer.decode_step`), which on CUDA are
captured in a CUDA graph once per generation and replayed: one launch per step instead of ~1000 small kernels.
The conditional and null branches run as one batch ``[cond (B); null (B)]`` and are combined on raw
logits as ``null + (cond - null) * cfg_scale``, then sampled with temperature, top-p or top-k, or greedily.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
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
                with torch.cuda.graph(self.graph, stream=torch.cuda.Stream(dev)):
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
def generate(model: Transformer, features: torch.Tensor, n_frames: int,
             params: SamplingParams = SamplingParams(), prompt: torch.Tensor | None = None,
             generator: torch.Generator | None = None, use_kv_cache: bool = True,
             on_step: StepCallback | None = None, step_mode: str = "auto", compile_step: bool = False
             ) -> GenerationOutput:
    """Generate ``n_frames`` DAC frames for each clip.

    features: visual features ``[B, N, 768]``; prompt: optional known codes ``[B, K, P]`` (P < n_frames) that
    are kept and continued (chunked generation of long videos). ``on_step(step, cond, null, guided)`` receives
    the last-position logits ``[B, K, V]`` of every loop step (``null`` is None without CFG).
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
    if n_frames < 1 or n_frames + k > cfg.rope_len:
        raise SamplingError(f"n_frames must be in [1, {cfg.rope_len - k}] (one 2.56 s window), got {n_frames}")
    frame, valid = pattern_index(k, n_frames, device)
    seq = torch.where(valid, UNKNOWN, cfg.special_token).expand(b, k, n_frames + k).clone()
    if prompt is not None and prompt.shape[-1] > 0:
        assert prompt.shape[:2] == (b, k) and prompt.shape[2] < n_frames, (
            f"prompt {tuple(prompt.shape)} must be [B={b}, K={k}, P < {n_frames}]")
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
    cache_len = cfg.rope_len if compile_step else n_frames + k
    cache = KVCache(cfg, rows, cache_len, device, dtype) if use_kv_cache else None
    stepper = None
    if cache is not None and step_mode != "dynamic":
        stepper = StaticStep(model, vis, cache, graph=step_mode == "graph", compile=compile_step)

    # a cell is filled only at its own step, so which steps have work is known now (one host sync, not one a step)
    steps_with_work = (seq == UNKNOWN).any(dim=1).any(dim=0).tolist()
    # every step's guided logits (divided by the temperature when sampling) finite; read once at the end
    finite = torch.ones((), dtype=torch.bool, device=device)
    sampling = params.use_sampling and params.temperature != 0
    for step in range(1, n_frames + k):
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
            logits = model.forward_tokens(prefix, vis, cache)
        last = logits[:, :, -1].float()  # [rows, K, V]
        if use_cfg:
            cond, unc = last[:b], last[b:]
            guided = unc + (cond - unc) * params.cfg_scale
        else:
            cond, unc, guided = last, None, last
        if on_step is not None:
            on_step(step, cond, unc, guided)
        finite &= torch.isfinite(guided / params.temperature if sampling else guided).all()
        nxt = sample_next(guided, params, generator)
        nxt = torch.where(valid[None, :, step], nxt, cfg.special_token)
        seq[:, :, step] = torch.where(todo, nxt, seq[:, :, step])
    if not bool(finite):
        raise SamplingError("non-finite logits (NaN or inf; with sampling: after dividing by the temperature "
                            f"{params.temperature}): check the weights, the inputs and the temperature")
    assert not (seq == UNKNOWN).any(), "generation left unknown cells"
    return GenerationOutput(codes=revert_pattern(seq), sequence=seq)
