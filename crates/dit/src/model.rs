//! The three diffusion transformers of the reference (Peebles & Xie, "Scalable Diffusion
//! Models with Transformers", 2023) applied to motion as in "Exploring Diffusion Transformers
//! for Human Motion Generation": in-context conditioning, AdaLN-modulated blocks and
//! cross-attention to encoded condition tokens. The network predicts `x0`.

use std::sync::Mutex;

use candle::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use diffusion::{Conditioning, Denoiser};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{DitConfig, MaskMode, Variant};
use crate::layers::{
    AdaLnBlock, CrossBlock, Ctx, LayerNorm, Linear, PreLnBlock, TimeEmbedding, position_table,
};
use crate::ops;
use kernels::bf16::Bf16Kernel;

/// Logit bias of an excluded key: finite, so a fully masked row gives a uniform average instead
/// of NaN (`exp(-1e30 - max)` is exactly 0 in `f32` otherwise).
const MASKED: f64 = -1e30;

#[derive(Debug, Clone)]
enum Body {
    InContext {
        cond_projection: Linear,
        blocks: Vec<PreLnBlock>,
        final_norm: LayerNorm,
    },
    AdaLn {
        joint_cond_projection: Linear,
        blocks: Vec<AdaLnBlock>,
        final_adaln: Linear,
    },
    CrossAttention {
        cond_projection: Linear,
        cond_pe: Tensor,
        cond_blocks: Vec<PreLnBlock>,
        blocks: Vec<CrossBlock>,
        final_norm: LayerNorm,
    },
}

/// A diffusion transformer denoiser (one of the three [`Variant`]s).
///
/// Built from a [`VarBuilder`] whose root holds the reference keys `model.*`
/// ([`Dit::new`]) or from a checkpoint file ([`Dit::from_checkpoint`]). Implements
/// [`diffusion::Denoiser`] in inference mode; [`Dit::training`] gives a training-mode view.
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use diffusion::{Conditioning, Denoiser};
/// use dit::{Dit, DitConfig, Variant};
///
/// let mut cfg = DitConfig::reference(Variant::AdaLn);
/// (cfg.latent_dim, cfg.num_layers, cfg.num_heads, cfg.num_cond_feats) = (32, 1, 2, 16);
/// let (dit, _vars) = Dit::init_random(&cfg, 7, &Device::Cpu)?;
/// let x = Tensor::zeros((2, 10, 205), DType::F32, &Device::Cpu)?;
/// let gamma = Tensor::new(&[0.5f32, 0.9], &Device::Cpu)?;
/// let cond = Conditioning::Pooled(Tensor::ones((2, 16), DType::F32, &Device::Cpu)?);
/// let mask = Tensor::ones((2, 10), DType::F32, &Device::Cpu)?;
/// let x0 = dit.forward(&x, &gamma, &cond, &mask)?;
/// assert_eq!(x0.dims(), &[2, 10, 205]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Dit {
    cfg: DitConfig,
    input_projection: Linear,
    pe: Tensor,
    time_embedding: TimeEmbedding,
    body: Body,
    final_linear: Linear,
    precision: Precision,
}

/// The arithmetic of the inference products (every linear layer) of a [`Dit`].
///
/// Training always runs in `f32`; so do attention scores, softmax, LayerNorm and the residual
/// stream in both precisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// `f32` products (the reference's arithmetic).
    #[default]
    F32,
    /// Weights rounded to bfloat16 once, activations rounded on the fly, products accumulated
    /// in `f32` ([`kernels::bf16`]): `vdpbf16ps` on CPUs with AVX512-BF16 (AMD Zen 4 / 5,
    /// Intel Cooper Lake, Sapphire Rapids and later), elsewhere the same numbers through `f32`
    /// `gemm` (no speed gain). Opt-in: the outputs differ from `f32` at bfloat16's precision.
    Bf16,
}

impl Precision {
    /// For [`Precision::Bf16`] on a CPU (or a SIMD cap, [`crate::simd`]) without AVX512-BF16:
    /// a sentence telling the user that the products run emulated, without a speed-up.
    pub fn emulation_note(self) -> Option<&'static str> {
        (self == Precision::Bf16 && Bf16Kernel::auto() != Bf16Kernel::Native).then_some(
            "this CPU has no AVX512-BF16 (or the SIMD level is capped): bf16 products run \
                 through f32 on bf16-rounded values, the same numbers without the speed-up",
        )
    }

    /// `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!(
                "unknown precision {other:?} (expected f32 or bf16)"
            )),
        }
    }
}

impl Dit {
    /// Builds the network from a [`VarBuilder`] whose root holds the reference keys `model.*`
    /// (`model.input_projection.0.weight`, `model.backbone_module.3.sa.qkv.weight`, ...).
    /// The sinusoid tables (`model.input_projection.1.pe`, `model.cond_positional_embedding.pe`)
    /// and `model.time_embedding.encode_time.freqs` are read when present, computed otherwise.
    pub fn new(cfg: &DitConfig, vb: VarBuilder) -> Result<Dit> {
        cfg.validate()?;
        let vb = vb.pp("model");
        let d = cfg.latent_dim;
        let heads = cfg.num_heads;
        let hidden = cfg.mlp_multiplier * d;
        let input_projection = Linear::new(vb.pp("input_projection.0"), cfg.num_feats, d)?;
        let pe = position_table(&vb, "input_projection.1.pe", cfg.max_positions, d)?;
        let time_embedding = TimeEmbedding::new(vb.pp("time_embedding"), cfg.time_channels(), d)?;
        let body = match cfg.variant {
            Variant::InContext => Body::InContext {
                cond_projection: Linear::new(vb.pp("cond_projection"), cfg.num_cond_feats, d)?,
                blocks: (0..cfg.num_layers)
                    .map(|l| {
                        PreLnBlock::new(vb.pp(format!("backbone_module.{l}")), d, heads, hidden)
                    })
                    .collect::<Result<_>>()?,
                final_norm: LayerNorm::new(vb.pp("final_norm"), d)?,
            },
            Variant::AdaLn => Body::AdaLn {
                joint_cond_projection: Linear::new(
                    vb.pp("joint_cond_projection"),
                    cfg.num_cond_feats,
                    d,
                )?,
                blocks: (0..cfg.num_layers)
                    .map(|l| {
                        AdaLnBlock::new(vb.pp(format!("backbone_module.{l}")), d, heads, hidden)
                    })
                    .collect::<Result<_>>()?,
                final_adaln: Linear::new(vb.pp("final_adaln.1"), d, 2 * d)?,
            },
            Variant::CrossAttention => Body::CrossAttention {
                cond_projection: Linear::new(vb.pp("cond_projection"), cfg.num_cond_feats, d)?,
                cond_pe: position_table(&vb, "cond_positional_embedding.pe", cfg.max_positions, d)?,
                cond_blocks: (0..cfg.num_cond_blocks)
                    .map(|l| PreLnBlock::new(vb.pp(format!("cond_sa.{l}")), d, heads, hidden))
                    .collect::<Result<_>>()?,
                blocks: (0..cfg.num_layers)
                    .map(|l| {
                        CrossBlock::new(vb.pp(format!("backbone_module.{l}")), d, heads, hidden)
                    })
                    .collect::<Result<_>>()?,
                final_norm: LayerNorm::new(vb.pp("final_norm"), d)?,
            },
        };
        let final_linear = Linear::new(vb.pp("final_linear"), d, cfg.num_feats)?;
        Ok(Dit {
            cfg: cfg.clone(),
            input_projection,
            pe,
            time_embedding,
            body,
            final_linear,
            precision: Precision::F32,
        })
    }

    /// The same network with its inference products in `precision` (weights shared; for
    /// [`Precision::Bf16`] every linear layer's weight is rounded to bfloat16 here, once, and
    /// kept beside the `f32` weight, which training and [`Precision::F32`] keep using).
    ///
    /// # Errors
    /// [`Precision::Bf16`] on a network that is not on the CPU (the bfloat16 kernels are CPU
    /// kernels).
    pub fn with_precision(mut self, precision: Precision) -> Result<Dit> {
        if precision == Precision::Bf16 {
            if !self.device().is_cpu() {
                candle::bail!(
                    "bf16 inference runs on the CPU kernels; this network is on {:?}",
                    self.device().location()
                )
            }
            let kernel = Bf16Kernel::auto();
            for l in self.linears() {
                l.bf16()?.prepare(kernel)?;
            }
        }
        self.precision = precision;
        Ok(self)
    }

    /// The precision of the inference products ([`Dit::with_precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Every linear layer of the network.
    fn linears(&self) -> Vec<&Linear> {
        let mut l = vec![&self.input_projection, &self.final_linear];
        l.extend(self.time_embedding.linears());
        match &self.body {
            Body::InContext {
                cond_projection,
                blocks,
                ..
            } => {
                l.push(cond_projection);
                l.extend(blocks.iter().flat_map(PreLnBlock::linears));
            }
            Body::AdaLn {
                joint_cond_projection,
                blocks,
                final_adaln,
            } => {
                l.extend([joint_cond_projection, final_adaln]);
                l.extend(blocks.iter().flat_map(AdaLnBlock::linears));
            }
            Body::CrossAttention {
                cond_projection,
                cond_blocks,
                blocks,
                ..
            } => {
                l.push(cond_projection);
                l.extend(cond_blocks.iter().flat_map(PreLnBlock::linears));
                l.extend(blocks.iter().flat_map(CrossBlock::linears));
            }
        }
        l
    }

    /// The configuration this network was built with.
    pub fn config(&self) -> &DitConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.pe.device()
    }

    /// The same network with another attention-mask mode (weights shared).
    pub fn with_mask_mode(mut self, mode: MaskMode) -> Dit {
        self.cfg.mask_mode = mode;
        self
    }

    /// A training-mode view (dropout, stochastic depth, label dropout) whose randomness comes
    /// from a `StdRng` seeded with `seed`; it implements [`Denoiser`] with differentiable ops.
    pub fn training(&self, seed: u64) -> TrainingDit<'_> {
        TrainingDit {
            dit: self,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            kernels: true,
        }
    }

    /// One forward pass in training mode, drawing dropout, stochastic-depth and label-dropout
    /// decisions from `rng`. Uses only differentiable ops: the fused kernels of
    /// [`kernels::grad`] for CPU `f32` tensors, plain candle ops otherwise.
    ///
    /// # Shapes
    /// As [`Denoiser::forward`]: `x_t: [B, F, num_feats]`, `gamma: [B]`, `frame_mask: [B, F]`
    /// (1 = valid) -> `[B, F, num_feats]`.
    pub fn forward_train(
        &self,
        x_t: &Tensor,
        gamma: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        rng: &mut StdRng,
    ) -> Result<Tensor> {
        self.forward_train_with(x_t, gamma, cond, frame_mask, rng, true)
    }

    fn forward_train_with(
        &self,
        x_t: &Tensor,
        gamma: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        rng: &mut StdRng,
        kernels: bool,
    ) -> Result<Tensor> {
        let mut ctx = Ctx {
            train: Some(rng),
            dropout: self.cfg.dropout,
            stochastic_depth: self.cfg.stochastic_depth,
            kernels,
            bf16: false,
        };
        self.run(x_t, gamma, cond, frame_mask, &mut ctx)
    }

    /// The condition as a tensor (`[B, C]` or `[B, L, C]`) plus an optional token mask.
    fn condition(
        &self,
        cond: &Conditioning,
        b: usize,
        dev: &Device,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let c = self.cfg.num_cond_feats;
        let seq = self.cfg.variant.sequential_condition();
        let (y, mask) = match (cond, seq) {
            (Conditioning::None, false) => (Tensor::zeros((b, c), DType::F32, dev)?, None),
            (Conditioning::None, true) => (Tensor::zeros((b, 1, c), DType::F32, dev)?, None),
            (Conditioning::Pooled(y), false) => (y.clone(), None),
            (Conditioning::Pooled(y), true) => (y.unsqueeze(1)?, None),
            (Conditioning::Tokens { tokens, mask }, true) => (tokens.clone(), mask.clone()),
            (Conditioning::Tokens { tokens, .. }, false) => candle::bail!(
                "the {} DiT takes a pooled condition [B, {c}], got tokens {:?}",
                self.cfg.variant,
                tokens.dims()
            ),
        };
        let want: &[usize] = if seq { &[b, 0, c] } else { &[b, c] };
        let ok = y.rank() == want.len()
            && y.dim(0)? == b
            && y.dim(y.rank() - 1)? == c
            && (!seq || y.dim(1)? > 0);
        if !ok {
            candle::bail!(
                "the {} DiT expects a condition of shape {}, got {:?}",
                self.cfg.variant,
                if seq {
                    format!("[{b}, L, {c}]")
                } else {
                    format!("[{b}, {c}]")
                },
                y.dims()
            )
        }
        if let Some(m) = &mask
            && m.dims() != [b, y.dim(1)?]
        {
            candle::bail!(
                "condition token mask has shape {:?}, expected [{b}, {}]",
                m.dims(),
                y.dim(1)?
            )
        }
        Ok((y.to_dtype(DType::F32)?, mask))
    }

    fn run(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, f, nf) = x.dims3()?;
        if nf != cfg.num_feats {
            candle::bail!(
                "x_t has {nf} features per frame, the DiT expects {}",
                cfg.num_feats
            )
        }
        if f > self.pe.dim(0)? {
            candle::bail!(
                "x_t has {f} frames, the position table only {}",
                self.pe.dim(0)?
            )
        }
        if gamma.dims() != [b] {
            candle::bail!("gamma has shape {:?}, expected [{b}]", gamma.dims())
        }
        if frame_mask.dims() != [b, f] {
            candle::bail!(
                "frame_mask has shape {:?}, expected [{b}, {f}]",
                frame_mask.dims()
            )
        }
        let dev = x.device();
        let (mut y, token_mask) = self.condition(cond, b, dev)?;
        if let Some(rng) = ctx.train.as_deref_mut() {
            let p = cfg.label_dropout;
            if p > 0.0 {
                let keep: Vec<f32> = (0..b)
                    .map(|_| if rng.random::<f64>() < p { 0.0 } else { 1.0 })
                    .collect();
                let mut shape = vec![1usize; y.rank()];
                shape[0] = b;
                y = y.broadcast_mul(&Tensor::from_vec(keep, shape, dev)?)?;
            }
        }
        let x = x.to_dtype(DType::F32)?;
        let valid = frame_mask
            .to_dtype(DType::F32)?
            .ge(0.5)?
            .to_dtype(DType::F32)?;
        // 0 for a valid key, MASKED for a padded one.
        let bool_bias = ((&valid - 1.0)? * -MASKED)?;
        let h = self.input_projection.forward(&x, ctx)?;
        // [B, F, D] + pe[F, D] (the fused kernel adds the [F * D] table to every sample).
        let h = ops::bias_add(&h, &self.pe.narrow(0, 0, f)?, ctx.fast())?;
        let t = self.time_embedding.forward(gamma, ctx)?;
        let out = match &self.body {
            Body::InContext {
                cond_projection,
                blocks,
                final_norm,
            } => {
                let c = cond_projection.forward(&y, ctx)?;
                let mut z = Tensor::cat(&[t.unsqueeze(1)?, c.unsqueeze(1)?, h], 1)?;
                let bias = match cfg.mask_mode {
                    // The reference's float mask: +1 for the two condition tokens and valid
                    // frames, +0 for padded frames, ADDED to the logits.
                    MaskMode::Reference => {
                        Tensor::cat(&[Tensor::ones((b, 2), DType::F32, dev)?, valid], 1)?
                    }
                    MaskMode::Strict => {
                        Tensor::cat(&[Tensor::zeros((b, 2), DType::F32, dev)?, bool_bias], 1)?
                    }
                };
                for block in blocks {
                    z = block.forward(&z, Some(&bias), ctx)?;
                }
                final_norm.forward(&z.narrow(1, 2, f)?, ctx)?
            }
            Body::AdaLn {
                joint_cond_projection,
                blocks,
                final_adaln,
            } => {
                let c = (joint_cond_projection.forward(&y, ctx)? + t)?;
                let silu_c = candle_nn::ops::silu(&c)?;
                let mut z = h;
                for block in blocks {
                    z = block.forward(&z, &silu_c, Some(&bool_bias), ctx)?;
                }
                let m = final_adaln.forward(&silu_c, ctx)?;
                let d = cfg.latent_dim;
                if ctx.grad_kernels(&z) {
                    kernels::grad::ln_modulate(
                        &z,
                        &m.narrow(1, d, d)?,
                        &m.narrow(1, 0, d)?,
                        crate::layers::LN_EPS,
                    )?
                } else {
                    ops::ln_modulate(
                        &z,
                        &m.narrow(1, d, d)?,
                        &m.narrow(1, 0, d)?,
                        crate::layers::LN_EPS,
                        ctx.fast(),
                    )?
                }
            }
            Body::CrossAttention {
                cond_projection,
                cond_pe,
                cond_blocks,
                blocks,
                final_norm,
            } => {
                let e = cond_projection.forward(&y, ctx)?;
                let mut e = Tensor::cat(&[t.unsqueeze(1)?, e], 1)?;
                let l = e.dim(1)?;
                if l > cond_pe.dim(0)? {
                    candle::bail!("{} condition tokens exceed the position table", l - 1)
                }
                e = ops::bias_add(&e, &cond_pe.narrow(0, 0, l)?, ctx.fast())?;
                // The reference masks no condition token; strict mode honours a token mask
                // (the time token is always valid).
                let cond_bias = match (cfg.mask_mode, token_mask) {
                    (MaskMode::Strict, Some(m)) => {
                        let m = m.to_dtype(DType::F32)?.ge(0.5)?.to_dtype(DType::F32)?;
                        let m = Tensor::cat(&[Tensor::ones((b, 1), DType::F32, dev)?, m], 1)?;
                        Some(((m - 1.0)? * -MASKED)?)
                    }
                    _ => None,
                };
                for block in cond_blocks {
                    e = block.forward(&e, cond_bias.as_ref(), ctx)?;
                }
                let mut z = h;
                for block in blocks {
                    z = block.forward(&z, &e, cond_bias.as_ref(), Some(&bool_bias), ctx)?;
                }
                final_norm.forward(&z, ctx)?
            }
        };
        self.final_linear.forward(&out, ctx)
    }
}

impl Denoiser for Dit {
    /// Inference-mode forward (deterministic).
    ///
    /// # Shapes
    /// - `x_t: [B, F, num_feats]`, `gamma: [B]`, `frame_mask: [B, F]` (1 = valid frame);
    /// - `cond`: [`Conditioning::Pooled`] `[B, num_cond_feats]` for in-context / AdaLN,
    ///   [`Conditioning::Tokens`] `[B, L, num_cond_feats]` for cross-attention;
    ///   [`Conditioning::None`] means the null condition (zeros), as in the reference.
    /// - returns the predicted `x0`, `[B, F, num_feats]`, on every frame (padded ones included).
    fn forward(
        &self,
        x_t: &Tensor,
        gamma: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
    ) -> Result<Tensor> {
        self.run(
            x_t,
            gamma,
            cond,
            frame_mask,
            &mut Ctx::eval(self.precision == Precision::Bf16),
        )
    }
}

/// A [`Dit`] in training mode: dropout, stochastic depth and label dropout are active, drawn
/// from its own seeded RNG, and every op is differentiable. Made by [`Dit::training`].
#[derive(Debug)]
pub struct TrainingDit<'a> {
    dit: &'a Dit,
    rng: Mutex<StdRng>,
    kernels: bool,
}

impl TrainingDit<'_> {
    /// With `false`, the forward runs on plain differentiable candle ops instead of the fused
    /// kernels of [`kernels::grad`] (same numbers up to float rounding and the same random
    /// draws; slower). For comparisons; the default is `true`.
    pub fn with_fused_kernels(mut self, on: bool) -> Self {
        self.kernels = on;
        self
    }
}

impl Denoiser for TrainingDit<'_> {
    /// Training-mode forward; shapes as for [`Dit`].
    fn forward(
        &self,
        x_t: &Tensor,
        gamma: &Tensor,
        cond: &Conditioning,
        frame_mask: &Tensor,
    ) -> Result<Tensor> {
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| candle::Error::Msg("training RNG lock poisoned".into()))?;
        self.dit
            .forward_train_with(x_t, gamma, cond, frame_mask, &mut rng, self.kernels)
    }
}
