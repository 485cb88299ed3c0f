"""The audio codec: descript-audio-codec's 44.1 kHz model (9 codebooks x 1024, hop 512, ~86 frames/s).

2.56 s of 44.1 kHz mono (112 896 samples) is right-padded to a multiple of the hop and encodes to codes
``[B, 9, 221]``; decoding codes ``[B, 9, T]`` gives ``[B, 1, T * 512]`` samples at 44.1 kHz. The release wraps
``dac.DAC.load`` of the 44 kHz 8 kbps weights (registry name ``dac_44khz``); the V-AURA checkpoint also carries a
float16 copy under ``audio_encoder.model.*``. ``debug_weights=True`` builds a seeded random tiny DAC with the
same hop and codebooks (and a latent width matching the tiny transformer).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from visualsound.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

WEIGHTS_NAME = "dac_44khz"
# constructor arguments of the 44 kHz model (dac.DAC's defaults; latent = 64 * 2**4 = 1024)
DAC_44KHZ_KWARGS: dict[str, Any] = dict(encoder_dim=64, encoder_rates=[2, 4, 8, 8], latent_dim=None,
                                        decoder_dim=1536, decoder_rates=[8, 8, 4, 2], n_codebooks=9,
                                        codebook_size=1024, codebook_dim=8, sample_rate=44100)
# the debug codec: same hop (512), codebooks and sample rate, tiny widths
TINY_DAC_KWARGS: dict[str, Any] = dict(DAC_44KHZ_KWARGS, encoder_dim=2, decoder_dim=16)


def build_dac(latent_dim: int | None = None, tiny: bool = False) -> nn.Module:
    """A randomly initialised ``dac.DAC`` with the 44 kHz (or tiny) architecture; `latent_dim` overrides the
    latent width (the tiny DAC must match the transformer's audio width)."""
    import dac

    kwargs = dict(TINY_DAC_KWARGS if tiny else DAC_44KHZ_KWARGS)
    if latent_dim is not None:
        kwargs["latent_dim"] = latent_dim
    return dac.DAC(**kwargs)


class Codec(nn.Module):
    """Thin wrapper over a ``dac.DAC``: ``encode`` audio ``[B, 1, N]`` -> codes ``[B, K, T]``, ``decode`` back."""

    def __init__(self, model: nn.Module, debug_weights: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        self.debug_weights = debug_weights

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def hop_length(self) -> int:
        return int(self.model.hop_length)

    @property
    def n_codebooks(self) -> int:
        return int(self.model.n_codebooks)

    @property
    def latent_dim(self) -> int:
        return int(self.model.latent_dim)

    def frames_for(self, num_samples: int) -> int:
        """Number of code frames for `num_samples` input samples (right-padded to the hop)."""
        return -(-num_samples // self.hop_length)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio ``[B, 1, N]`` or ``[B, N]`` float at 44.1 kHz -> codes ``[B, K, ceil(N / 512)]`` int64."""
        if audio.dim() == 2:
            audio = audio[:, None]
        assert audio.dim() == 3 and audio.shape[1] == 1, f"audio must be mono [B, 1, N], got {tuple(audio.shape)}"
        param = next(self.model.parameters())
        x = self.model.preprocess(audio.to(param), self.sample_rate)
        _, codes, *_ = self.model.encode(x)
        return codes.long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, K, T]`` -> audio ``[B, 1, T * 512]`` float32 at 44.1 kHz."""
        assert codes.dim() == 3 and codes.shape[1] == self.n_codebooks, f"codes must be [B, K, T]: {codes.shape}"
        assert int(codes.min()) >= 0 and int(codes.max()) < self.model.codebook_size, "codes out of range"
        z, _, _ = self.model.quantizer.from_codes(codes.to(next(self.model.parameters()).device))
        return self.model.decode(z).float()

    @torch.no_grad()
    def quantizer_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codebooks [K, 1024, 8], out_proj_bias [K, latent])`` to initialise the transformer's embeddings."""
        qs = self.model.quantizer.quantizers
        codebooks = torch.stack([q.codebook.weight.float() for q in qs])
        bias = torch.stack([q.out_proj.bias.float() for q in qs])
        return codebooks, bias


def load_codec(checkpoint: str | os.PathLike | None = None, debug_weights: bool = False,
               device: torch.device | str = "cpu", latent_dim: int = 32, seed: int = 0) -> Codec:
    """The 44 kHz DAC via ``dac.DAC.load`` (None = the registry's ``dac_44khz`` cache path), or with
    ``debug_weights`` a seeded random tiny DAC with latent width `latent_dim` (no file is read); both a
    `checkpoint` and `debug_weights` raise `ConfigError`."""
    if debug_weights and checkpoint is not None:
        raise ConfigError(f"load_codec: pass either a checkpoint ({checkpoint}) or debug_weights=True, not both")
    if debug_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_dac(latent_dim=latent_dim, tiny=True)
        log.info("using a random tiny DAC (debug weights)")
        return Codec(model, debug_weights=True).to(device)
    from visualsound.utils.checkpoint import safe_torch_load
    from visualsound.weights import resolve

    path = resolve(WEIGHTS_NAME, checkpoint)
    # read as plain weights (``dac.DAC.load`` first tries ``torch.package``, an unrestricted unpickler, and then
    # swallows every error of that attempt); the architecture comes from the tensor shapes, loaded strictly
    blob = safe_torch_load(path)
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a DAC 44 kHz checkpoint (expected a dict with 'state_dict')")
    return codec_from_state_dict(blob["state_dict"], device)


def dac_kwargs_from_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The ``dac.DAC`` constructor arguments of a state dict: widths and codebooks are read from the shapes
    (``encoder.block.0`` = first conv ``1 -> encoder_dim``, ``decoder.model.0`` = ``latent -> decoder_dim``);
    the strides are the 44 kHz model's."""
    try:
        enc = state_dict["encoder.block.0.weight_v"].shape
        dec = state_dict["decoder.model.0.weight_v"].shape
        book = state_dict["quantizer.quantizers.0.codebook.weight"].shape
    except KeyError as e:
        raise CheckpointError(f"not a DAC state dict: {e} is missing") from e
    n_q = sum(1 for k in state_dict if k.startswith("quantizer.quantizers.") and k.endswith(".codebook.weight"))
    return dict(DAC_44KHZ_KWARGS, encoder_dim=int(enc[0]), decoder_dim=int(dec[0]), latent_dim=int(dec[1]),
                n_codebooks=n_q, codebook_size=int(book[0]), codebook_dim=int(book[1]))


def codec_from_state_dict(state_dict: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> Codec:
    """The DAC of a state dict such as the V-AURA checkpoint's ``audio_encoder.model.*`` (float16), loaded
    strictly and kept in float32 (the architecture is read from the shapes)."""
    import dac

    from visualsound.utils.checkpoint import load_state_dict_strict

    kwargs = dac_kwargs_from_state_dict(state_dict)
    with torch.device("meta"):
        model = dac.DAC(**kwargs)
    load_state_dict_strict(model, {k: v.float() for k, v in state_dict.items()}, what="DAC state dict")
    return Codec(model).to(device)
