"""Thin fp32 linear products on the CPU through a small AVX2 kernel (``vaura/csrc/thin_linear.c``).

A cached decode step multiplies 2 S rows (the CFG batch) by every weight matrix, so on a CPU it is bound by how
fast the 2.7 GB of paper-size weights stream from memory. For such thin products MKL's ``sgemm`` (behind
`torch.nn.functional.linear`) reads them at about 45% of one core's bandwidth and oneDNN on pre-packed weights
at about 70%; the kernel streams the plain row-major weight once, about as fast as a plain read of it (a
pass over the paper size's 2.7 GB of block weights, 1 thread, 2 rows: ``torch.sum`` 17.9 GB/s, kernel 17.7,
oneDNN packed 12.7, ``F.linear`` 7.9: ``scripts/bench_thin_linear.py``; whole generations:
``scripts/bench_sampler.py``). It needs no copy or repacking of the weights.

`ThinLinear` is a `torch.nn.Linear` (same parameters, state dict, ``.to()``, pickling and training) whose forward
calls the kernel when that applies, and `torch.nn.functional.linear` otherwise:

* the kernel is built (see below), the input, weight and bias are fp32 on the CPU, the weight and bias contiguous;
* at most `MAX_ROWS` rows (the kernel's lead over ``F.linear`` shrinks with rows: 2.25x at 2, 1.31x at 20,
  1.03x at 32, 1.01x at 64 in ``scripts/bench_thin_linear.py``; beyond 32 a blocked GEMM is left to do it);
* no gradient is needed (grad mode off, or neither input nor parameters require grad);
* no ``torch.compile`` or ``torch.jit`` trace, CPU autocast, forward-mode AD or functorch transform is active
  (there ``F.linear`` computes exactly as `torch.nn.Linear`).

The kernel's sums run in another order than MKL's, so results differ by float rounding only (relative ~1e-6).
`use_thin_linears` swaps every `torch.nn.Linear` of a model for a `ThinLinear` holding the same parameter objects
(no copy), and `remove_thin_linears` swaps them back.

Build: the C source is compiled once per source, compiler command and version, flags and machine into
``<cache_dir>/kernels/`` (`cache_dir`: ``$VAURA_CACHE_DIR`` etc.) with ``$CC`` (split as a shell would; else
``cc``, ``gcc`` or ``clang``) and ``-O3 -mavx2 -mfma -fopenmp`` (if that fails, without OpenMP: one thread),
written atomically, and loaded with `ctypes` after torch, so that the library's ``libgomp.so.1`` resolves to the
OpenMP runtime torch already loaded (one thread pool; a test checks ``/proc/self/maps``). It needs an
x86-64 CPU with AVX2 and FMA. `kernel_status` says whether the kernel is usable and if not, why
(`KernelUnavailableError` carries the same reason); a failure is remembered for the process.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vaura.packed import child_slots
from visualsound.errors import ConfigError
from visualsound.weights import cache_dir

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "thin_linear.c"
ABI = 1  # what vaura_thin_linear_abi() returns for this source
MAX_ROWS = 32  # rows up to which the kernel is used (scripts/bench_thin_linear.py; see the module docstring)
FLAGS = ["-O3", "-mavx2", "-mfma", "-shared", "-fPIC"]
OPENMP_FLAG = "-fopenmp"
BUILD_TIMEOUT_S = 120


class KernelUnavailableError(ConfigError):
    """The thin-linear kernel cannot be built or loaded here; the message says why."""


_lock = threading.Lock()
_kernel: ctypes._CFuncPtr | None = None  # vaura_thin_linear_f32, once loaded
_failure: str | None = None  # why it cannot be, once known (not retried in this process)
_openmp = False


def _compiler() -> list[str]:
    """The C compiler command: ``$CC`` split as a shell would (``ccache gcc`` works), else cc, gcc or clang."""
    cc = os.environ.get("CC", "").strip()
    if cc:
        return shlex.split(cc)
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    raise KernelUnavailableError("no C compiler found (set $CC, or install gcc or clang)")


def _cpu_reason() -> str | None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the kernel is for x86-64 CPUs with AVX2 (this is {platform.machine()})"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        return f"this CPU has no AVX2/FMA (torch reports CPU capability {capability})"
    return None


def _compiler_id(cc: list[str]) -> str:
    """The first line of ``cc --version`` (part of the cache key: another compiler builds another file)."""
    try:
        out = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise KernelUnavailableError(f"C compiler {shlex.join(cc)!r} cannot run: {err}") from err
    if out.returncode != 0:
        raise KernelUnavailableError(f"C compiler {shlex.join(cc)!r} cannot run: {out.stderr.strip()[:500]}")
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else shlex.join(cc)


def library_path(cc: list[str], flags: list[str], compiler_id: str | None = None) -> Path:
    """Where the kernel built by the command `cc` with `flags` is cached (one file per source, compiler command
    and version, flags and machine)."""
    ident = compiler_id if compiler_id is not None else _compiler_id(cc)
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), shlex.join(cc).encode(), ident.encode(),
                                     " ".join(flags).encode(), platform.machine().encode()])).hexdigest()[:16]
    return cache_dir() / "kernels" / f"thin_linear-{key}.so"


def _build(cc: list[str], flags: list[str], out: Path) -> str | None:
    """Compile into `out` atomically; returns the compiler's error text on failure."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".so", dir=out.parent)
    except OSError as err:
        return f"cannot write to the cache folder {out.parent}: {err} (set $VAURA_CACHE_DIR)"
    os.close(fd)
    try:
        try:
            res = subprocess.run([*cc, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                                 timeout=BUILD_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as err:
            return str(err)
        if res.returncode != 0:
            return (res.stderr or res.stdout).strip()[:2000] or f"exit status {res.returncode}"
        os.replace(tmp, out)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> ctypes._CFuncPtr:
    global _openmp
    reason = _cpu_reason()
    if reason is not None:
        raise KernelUnavailableError(reason)
    if not SOURCE.is_file():
        raise KernelUnavailableError(f"the kernel source {SOURCE} is missing from this installation")
    cc = _compiler()
    ident = _compiler_id(cc)
    errors = []
    for flags, openmp in (([*FLAGS, OPENMP_FLAG], True), (FLAGS, False)):
        path = library_path(cc, flags, ident)
        if not path.is_file():
            log.info("building the thin-linear CPU kernel: %s %s -> %s", shlex.join(cc), " ".join(flags), path)
            err = _build(cc, flags, path)
            if err is not None:
                errors.append(f"{shlex.join(cc)} {' '.join(flags)}: {err}")
                continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as err:
            errors.append(f"loading {path}: {err}")
            continue
        if lib.vaura_thin_linear_abi() != ABI:
            errors.append(f"{path} reports ABI {lib.vaura_thin_linear_abi()}, expected {ABI}")
            continue
        fn = lib.vaura_thin_linear_f32
        fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_int]
        fn.restype = None
        if not openmp:
            log.warning("the thin-linear kernel was built without OpenMP (%s): it runs on one thread",
                        errors[-1].splitlines()[0] if errors else "")
        _openmp = openmp
        return fn
    raise KernelUnavailableError("the thin-linear kernel could not be built: " + "\n".join(errors))


def load_kernel() -> ctypes._CFuncPtr:
    """The compiled kernel (built on first use, then cached on disk and in this process). Raises
    `KernelUnavailableError` with the reason where it cannot be; a failure is remembered for the process."""
    global _kernel, _failure
    with _lock:
        if _kernel is None and _failure is None:
            try:
                _kernel = _load()
            except KernelUnavailableError as err:
                _failure = str(err)
                log.warning("thin-linear CPU kernel unavailable (linear layers use F.linear): %s", _failure)
            except Exception as err:  # anything else (a broken library, no home folder): recorded, with its type
                _failure = f"the thin-linear kernel could not be loaded: {type(err).__name__}: {err}"
                log.warning("%s", _failure, exc_info=True)
        if _kernel is None:
            raise KernelUnavailableError(_failure)
        return _kernel


def kernel_status() -> tuple[bool, str]:
    """``(True, "")`` when the kernel is usable, else ``(False, reason)``; builds it on the first call."""
    try:
        load_kernel()
    except KernelUnavailableError as err:
        return False, str(err)
    return True, ""


def unavailable_reason(rows: int) -> str | None:
    """Why the kernel cannot serve a decode step of `rows` product rows (built on the first call), or None."""
    ok, why = kernel_status()
    if not ok:
        return why
    return f"a decode step has {rows} rows, over the kernel's {MAX_ROWS}" if rows > MAX_ROWS else None


def _usable() -> bool:
    """Whether the kernel is loaded, loading it first if that was never tried in this process (a model
    unpickled in a new process)."""
    return _kernel is not None or (_failure is None and kernel_status()[0])


def _traced_or_transformed(x: torch.Tensor) -> bool:
    """Contexts where a raw pointer call would be wrong or invisible: a ``torch.compile`` or ``torch.jit``
    trace, CPU autocast (``F.linear`` would compute in bf16), forward-mode AD (a tangent would be dropped) and
    functorch transforms (vmap, grad)."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.is_autocast_enabled("cpu")
            or getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0
            or torch._C._functorch.is_functorch_wrapped_tensor(x))


def kernel_threads() -> int:
    """Threads the kernel splits a product over: torch's intra-op thread count (1 without OpenMP)."""
    return torch.get_num_threads() if _openmp else 1


def thin_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K] @ weight[N, K]^T + bias[N]`` through the kernel: fp32 CPU tensors, a contiguous weight, no
    autograd (the result has no gradient). Any row count works (the kernel pays off up to `MAX_ROWS`)."""
    fn = load_kernel()
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            raise ConfigError(f"thin_linear takes fp32 CPU tensors; {name} is {t.dtype} on {t.device}")
    # checked explicitly (not asserted): the C code trusts these sizes and layouts
    if weight.dim() != 2 or not weight.is_contiguous():
        raise ValueError(f"thin_linear needs a contiguous weight [N, K], got {tuple(weight.shape)} with strides "
                         f"{weight.stride()}")
    n, k = weight.shape
    if x.dim() < 1 or x.shape[-1] != k:
        raise ValueError(f"thin_linear: x {tuple(x.shape)} does not match the weight {tuple(weight.shape)}")
    if bias is not None and (tuple(bias.shape) != (n,) or not bias.is_contiguous()):
        raise ValueError(f"thin_linear needs a contiguous bias [{n}], got {tuple(bias.shape)} with strides "
                         f"{bias.stride()}")
    x2 = x.reshape(x.shape[:-1].numel(), k).contiguous()
    y = torch.empty(x2.shape[0], n, dtype=torch.float32)
    if y.numel() and k:
        fn(weight.data_ptr(), None if bias is None else bias.data_ptr(), x2.data_ptr(), y.data_ptr(),
           x2.shape[0], n, k, kernel_threads())
    elif y.numel():  # K = 0: an empty sum
        y.copy_(torch.zeros_like(y) if bias is None else bias.detach().expand_as(y))
    return y.view(*x.shape[:-1], n)


class ThinLinear(nn.Linear):
    """`torch.nn.Linear` whose thin fp32 CPU products (at most `MAX_ROWS` rows, no autograd) run through the
    kernel; everything else, and every other method, is `torch.nn.Linear`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_applies(x):
            return thin_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def kernel_applies(self, x: torch.Tensor) -> bool:
        """Whether ``self(x)`` runs through the kernel (see the module docstring for when it does)."""
        w, b = self.weight, self.bias
        return (x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
                and w.device.type == "cpu" and w.is_contiguous()
                and (b is None or (b.dtype == torch.float32 and b.device.type == "cpu" and b.is_contiguous()))
                and not _traced_or_transformed(x)
                and x.numel() <= MAX_ROWS * x.shape[-1]
                and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                                      or (b is not None and b.requires_grad)))
                and _usable())

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> ThinLinear:
        """A `ThinLinear` holding `lin`'s own parameter objects (no copy)."""
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta")
        new.weight = lin.weight
        new.bias = lin.bias
        new.train(lin.training)
        return new


def use_thin_linears(model: nn.Module) -> int:
    """Swap every module of exactly type `torch.nn.Linear` in `model` for a `ThinLinear` with the same
    parameters, in place, after building the kernel (raises `KernelUnavailableError` with the reason if it
    cannot be). Returns how many layers were swapped; the state dict is unchanged."""
    load_kernel()
    found = child_slots(model, nn.Linear)
    for parent, name in found:
        setattr(parent, name, ThinLinear.from_linear(getattr(parent, name)))
    log.info("%d linear layers use the thin-linear CPU kernel (up to %d rows)", len(found), MAX_ROWS)
    return len(found)


def remove_thin_linears(model: nn.Module) -> int:
    """Undo `use_thin_linears`: every `ThinLinear` becomes a `torch.nn.Linear` with the same parameters."""
    found = child_slots(model, ThinLinear)
    for parent, name in found:
        thin = getattr(parent, name)
        lin = nn.Linear(thin.in_features, thin.out_features, bias=thin.bias is not None, device="meta")
        lin.weight, lin.bias = thin.weight, thin.bias
        lin.train(thin.training)
        setattr(parent, name, lin)
    return len(found)


def uses_thin_linears(model: nn.Module) -> bool:
    """Whether any layer of `model` is a `ThinLinear`."""
    return any(isinstance(m, ThinLinear) for m in model.modules())
