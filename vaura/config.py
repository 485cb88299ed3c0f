"""V-AURA model configuration: one frozen dataclass with presets ``paper``, ``reduced`` (parity fixture), ``tiny``.

Derived sizes (head dim, SwiGLU hidden, visual/audio channel split) are properties, so a config file only holds
the free knobs. The release (``paper``) is 24 layers x d_model 1536 x 16 heads; the block input is the channel
concatenation ``[visual d_model // 3 | audio latent]``, so the audio width (= the DAC latent dim) is
``d_model - d_model // 3`` (1024 for the release).
"""

from __future__ import annotations

from dataclasses import dataclass

from visualsound.errors import ConfigError
from visualsound.utils.config import FrozenConfig, register_preset


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of `k` that is >= `n` (the original's SwiGLU width rule)."""
    return n if n % k == 0 else n + k - (n % k)


@dataclass(frozen=True)
class VAuraConfig(FrozenConfig):
    """Hyper-parameters of the V-AURA transformer (``models.modules.sampler.llama.Transformer`` in the release)."""

    n_layer: int = 24
    d_model: int = 1536
    n_head: int = 16
    ffn_multiple_of: int = 256           # SwiGLU hidden = find_multiple(int(2 * 4 * d_model / 3), this)
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    rope_len: int = 256                  # max(block_size_audio 256, block_size_video 64)
    n_codebooks: int = 9
    card: int = 1024                     # codes 0..card-1; id `card` is the special (BOS / pad) token
    codebook_dim: int = 8                # DAC codebook vector size (the audio embedding table width)
    visual_dim: int = 768                # Segment AVCLIP feature width
    visual_tokens: int = 32              # visual tokens per 2.56 s window
    steps_per_visual_token: int = 7      # audio_tokens_per_video_frame
    visual_channel_scaler: int = 3       # visual hidden = d_model // this
    dropout: float = 0.1                 # token (fused input), residual (after wo) and SwiGLU output dropout
    attn_dropout: float = 0.0            # attention-probability dropout (0 in the release)
    cond_drop: float = 0.1               # CFG condition drop probability in training
    frames_per_window: int = 221         # DAC 44 kHz frames in 2.56 s (the generation script uses 220)
    sample_rate: int = 44100
    hop_length: int = 512

    def __post_init__(self) -> None:
        if self.d_model % self.n_head != 0:
            raise ConfigError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.head_dim % 2 != 0:
            raise ConfigError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.d_model // self.visual_channel_scaler <= 0:
            raise ConfigError(f"d_model {self.d_model} too small for visual_channel_scaler "
                              f"{self.visual_channel_scaler}")
        for name in ("dropout", "attn_dropout", "cond_drop"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {p}")
        if self.n_layer < 1 or self.n_codebooks < 1 or self.card < 2:
            raise ConfigError(f"invalid sizes: n_layer={self.n_layer} n_codebooks={self.n_codebooks} "
                              f"card={self.card}")

    # -- derived sizes -------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ffn_hidden(self) -> int:
        return find_multiple(int(2 * 4 * self.d_model / 3), self.ffn_multiple_of)

    @property
    def visual_hidden(self) -> int:
        return self.d_model // self.visual_channel_scaler

    @property
    def audio_width(self) -> int:
        """Audio embedding width = the DAC latent dim (1024 for the release)."""
        return self.d_model - self.visual_hidden

    @property
    def special_token(self) -> int:
        return self.card

    @property
    def vocab_in(self) -> int:
        return self.card + 1

    @property
    def max_delay(self) -> int:
        return self.n_codebooks - 1

    @property
    def visual_steps(self) -> int:
        """Pattern steps covered by visual tokens (224); later steps get ``empty_video_emb``."""
        return self.visual_tokens * self.steps_per_visual_token

    @property
    def window_seconds(self) -> float:
        return 2.56


PAPER = register_preset(VAuraConfig, "paper", VAuraConfig())
REDUCED = register_preset(VAuraConfig, "reduced", VAuraConfig(n_layer=2, d_model=96, n_head=4, dropout=0.0))
# tiny: pairs with the tiny Synchformer MotionFormer (vis_dim 32) and the tiny debug DAC (latent 32)
TINY = register_preset(VAuraConfig, "tiny", VAuraConfig(n_layer=2, d_model=48, n_head=4, dropout=0.0, visual_dim=32))
# mid size for the sampler benchmark (d_model 384, 6 layers: ~15 M parameters)
MID = register_preset(VAuraConfig, "mid", VAuraConfig(n_layer=6, d_model=384, n_head=6, dropout=0.0))
