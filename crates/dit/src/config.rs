//! Configuration of the diffusion transformers (Peebles & Xie, "Scalable Diffusion Models with
//! Transformers", 2023), mirroring the reference configuration files field by field.

use serde::{Deserialize, Serialize};

/// How the condition enters the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Variant {
    /// Time and condition tokens prepended to the motion tokens.
    #[serde(rename = "incontext")]
    InContext,
    /// Adaptive LayerNorm modulation by `Linear(cond) + time`.
    #[serde(rename = "adaln")]
    AdaLn,
    /// Cross-attention to an encoded condition token sequence.
    #[serde(rename = "cross_attention")]
    CrossAttention,
}

impl Variant {
    /// The reference name (`"incontext"`, `"adaln"`, `"cross_attention"`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::InContext => "incontext",
            Variant::AdaLn => "adaln",
            Variant::CrossAttention => "cross_attention",
        }
    }

    /// Whether the condition is a token sequence (`[B, L, C]`) rather than one vector.
    pub fn sequential_condition(self) -> bool {
        matches!(self, Variant::CrossAttention)
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which attention mask the network applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMode {
    /// Reproduce the reference exactly. For the in-context variant this is its additive float
    /// mask quirk (`+1` added to the logits of condition tokens and valid frames, `+0` to padded
    /// frames, so padded frames are attended); token masks of a [`diffusion::Conditioning::Tokens`]
    /// condition are ignored (the reference attends zero-padded text tokens).
    #[default]
    Reference,
    /// Padded frames are excluded as keys in every variant, and a token mask given with the
    /// condition excludes padded condition tokens.
    Strict,
}

/// Hyper-parameters of a [`crate::Dit`]. Field names are those of the reference configuration
/// (`variant` also accepts the reference's `name`); fields beyond the reference have defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DitConfig {
    /// Architecture variant (`"incontext"`, `"adaln"`, `"cross_attention"`).
    #[serde(alias = "name")]
    pub variant: Variant,
    /// Motion features per frame (205 for SMPL-RIFKE).
    pub num_feats: usize,
    /// Condition features per vector or token (512 for CLIP ViT-B/32).
    pub num_cond_feats: usize,
    /// Longest motion of the training data (frames).
    pub num_frames: usize,
    /// Transformer width `D`.
    pub latent_dim: usize,
    /// MLP hidden width = `mlp_multiplier * D`.
    pub mlp_multiplier: usize,
    /// Number of backbone blocks.
    pub num_layers: usize,
    /// Attention heads (must divide `latent_dim`).
    pub num_heads: usize,
    /// Dropout probability (training only).
    pub dropout: f64,
    /// Probability of dropping a residual branch per sample (training only).
    pub stochastic_depth: f64,
    /// Probability of replacing a sample's condition by zeros (training only).
    pub label_dropout: f64,
    /// Attention-mask behaviour (reference-compatible by default).
    #[serde(default)]
    pub mask_mode: MaskMode,
    /// Rows of the sinusoid position tables (the reference buffers hold 10000).
    #[serde(default = "default_max_positions")]
    pub max_positions: usize,
    /// Self-attention blocks encoding the condition tokens (cross-attention variant).
    #[serde(default = "default_cond_blocks")]
    pub num_cond_blocks: usize,
}

fn default_max_positions() -> usize {
    10_000
}

fn default_cond_blocks() -> usize {
    2
}

impl DitConfig {
    /// The published configuration of the reference models: 205 features, 512-d CLIP condition,
    /// 197 frames, latent 512, 8 layers, 16 heads, MLP x4, dropout / stochastic depth / label
    /// dropout 0.1.
    pub fn reference(variant: Variant) -> Self {
        Self {
            variant,
            num_feats: 205,
            num_cond_feats: 512,
            num_frames: 197,
            latent_dim: 512,
            mlp_multiplier: 4,
            num_layers: 8,
            num_heads: 16,
            dropout: 0.1,
            stochastic_depth: 0.1,
            label_dropout: 0.1,
            mask_mode: MaskMode::Reference,
            max_positions: default_max_positions(),
            num_cond_blocks: default_cond_blocks(),
        }
    }

    /// Channels of the sinusoidal time embedding (`D / 4`).
    pub fn time_channels(&self) -> usize {
        self.latent_dim / 4
    }

    /// Channels per attention head.
    pub fn head_dim(&self) -> usize {
        self.latent_dim / self.num_heads.max(1)
    }

    /// Checks the sizes for consistency; the message names the offending field.
    pub fn validate(&self) -> candle::Result<()> {
        let fail = |m: String| Err(candle::Error::Msg(format!("invalid DitConfig: {m}")));
        if self.latent_dim == 0 || self.num_heads == 0 || self.num_feats == 0 {
            return fail("latent_dim, num_heads and num_feats must be positive".into());
        }
        if !self.latent_dim.is_multiple_of(self.num_heads) {
            return fail(format!(
                "latent_dim {} is not divisible by num_heads {}",
                self.latent_dim, self.num_heads
            ));
        }
        if !self.latent_dim.is_multiple_of(8) {
            return fail(format!(
                "latent_dim {} must be a multiple of 8 (time embedding of D/4 channels, cos/sin halves)",
                self.latent_dim
            ));
        }
        if self.mlp_multiplier == 0 {
            return fail("mlp_multiplier must be positive".into());
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("stochastic_depth", self.stochastic_depth),
            ("label_dropout", self.label_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return fail(format!("{name} = {p} is not in [0, 1)"));
            }
        }
        Ok(())
    }
}
