//! ACTOR-style transformer encoder, the building block of TMR's motion and text encoders.
//!
//! Papers: Petrovich et al., "Action-Conditioned 3D Human Motion Synthesis with Transformer VAE"
//! (ACTOR, ICCV 2021) and "TMR: Text-to-Motion Retrieval Using Contrastive 3D Human Motion
//! Synthesis" (ICCV 2023). Architecture (DESIGN §4.5, fixture `tmr.json`):
//!
//! 1. `z = projection(x)`, `Linear(nfeats -> d)`;
//! 2. two learned tokens (`tokens[0]` = mu, `tokens[1]` = logvar) are prepended: `[B, T+2, d]`;
//! 3. a sinusoidal position table (not stored in the state dict) is added:
//!    `pe[p, 2i] = sin(p w_i)`, `pe[p, 2i+1] = cos(p w_i)`, `w_i = exp(2i * (-ln(10000) / d))`;
//! 4. `num_layers` PyTorch post-norm `TransformerEncoderLayer`s: packed `in_proj_weight` split as
//!    q|k|v, heads channel-major, padded keys excluded, `x = LN1(x + attn)`,
//!    `x = LN2(x + W2 GELU_erf(W1 x))`, LayerNorm eps 1e-5;
//! 5. the output is the two token positions `[B, 2, d]` (mu, logvar).
//!
//! Mask convention: 1 = valid frame / token. Padded positions are zeroed before the projection,
//! so their content (even NaN or infinite garbage) never reaches the result.

use candle::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use kernels::{grad, ops};
use rand::rngs::StdRng;

/// Sizes of one ACTOR encoder. `Default` gives the reference TMR motion encoder
/// (`nfeats` 205, `latent_dim` 256, `ff_size` 1024, 6 layers, 4 heads).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActorEncoderConfig {
    /// Input feature width (205 for SMPL-RIFKE motion, 512 for CLIP token features).
    pub nfeats: usize,
    /// Model width `d`.
    pub latent_dim: usize,
    /// Feed-forward width of each transformer layer.
    pub ff_size: usize,
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Number of attention heads (`latent_dim` must be divisible by it).
    pub num_heads: usize,
    /// Dropout probability used by [`ActorEncoder::forward_train`] (the reference trains with 0.1).
    pub dropout: f64,
}

impl Default for ActorEncoderConfig {
    fn default() -> Self {
        Self::tmr_motion()
    }
}

impl ActorEncoderConfig {
    /// The reference TMR motion encoder (`nfeats` 205).
    pub fn tmr_motion() -> Self {
        Self {
            nfeats: 205,
            latent_dim: 256,
            ff_size: 1024,
            num_layers: 6,
            num_heads: 4,
            dropout: 0.1,
        }
    }

    /// The reference TMR text encoder (`nfeats` 512, CLIP ViT-B/32 token features).
    pub fn tmr_text() -> Self {
        Self {
            nfeats: 512,
            ..Self::tmr_motion()
        }
    }

    /// Every state-dict key this configuration needs, with its shape.
    pub fn state_dict_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, f) = (self.latent_dim, self.ff_size);
        let mut keys = vec![
            ("tokens".to_string(), vec![2, d]),
            ("projection.weight".to_string(), vec![d, self.nfeats]),
            ("projection.bias".to_string(), vec![d]),
        ];
        for n in 0..self.num_layers {
            let p = format!("seqTransEncoder.layers.{n}");
            keys.extend([
                (format!("{p}.self_attn.in_proj_weight"), vec![3 * d, d]),
                (format!("{p}.self_attn.in_proj_bias"), vec![3 * d]),
                (format!("{p}.self_attn.out_proj.weight"), vec![d, d]),
                (format!("{p}.self_attn.out_proj.bias"), vec![d]),
                (format!("{p}.linear1.weight"), vec![f, d]),
                (format!("{p}.linear1.bias"), vec![f]),
                (format!("{p}.linear2.weight"), vec![d, f]),
                (format!("{p}.linear2.bias"), vec![d]),
                (format!("{p}.norm1.weight"), vec![d]),
                (format!("{p}.norm1.bias"), vec![d]),
                (format!("{p}.norm2.weight"), vec![d]),
                (format!("{p}.norm2.bias"), vec![d]),
            ]);
        }
        keys
    }

    fn validate(&self) -> Result<()> {
        if self.num_heads == 0 || !self.latent_dim.is_multiple_of(self.num_heads) {
            candle::bail!(
                "ActorEncoderConfig: latent_dim {} is not divisible by num_heads {}",
                self.latent_dim,
                self.num_heads
            );
        }
        if !self.latent_dim.is_multiple_of(2) {
            candle::bail!(
                "ActorEncoderConfig: latent_dim {} must be even (sinusoidal positions)",
                self.latent_dim
            );
        }
        Ok(())
    }
}

/// Sinusoidal position table `[rows, d]`, computed in float32 in the reference's order:
/// `w_i = exp(f32(2i) * f32(-ln(10000) / d))`, `pe[p, 2i] = sin(f32(p) * w_i)`,
/// `pe[p, 2i+1] = cos(f32(p) * w_i)`.
pub fn sinusoidal_table(rows: usize, d: usize, device: &Device) -> Result<Tensor> {
    let factor = (-(10000f64).ln() / d as f64) as f32;
    let w: Vec<f32> = (0..d / 2)
        .map(|i| ((2 * i) as f32 * factor).exp())
        .collect();
    let mut data = Vec::with_capacity(rows * d);
    for p in 0..rows {
        for &wi in &w {
            let a = p as f32 * wi;
            data.push(a.sin());
            data.push(a.cos());
        }
    }
    Tensor::from_vec(data, (rows, d), device)
}

/// Dropout probability and its random source (training forward only).
struct Dropout<'a> {
    p: f64,
    rng: &'a mut StdRng,
}

impl Dropout<'_> {
    /// `n` multipliers, each 0 (probability `p`) or `1 / (1 - p)`, in row-major order
    /// ([`grad::dropout_keep`]); `None` when `p = 0`.
    fn keep(&mut self, n: usize) -> Option<Vec<f32>> {
        grad::dropout_keep(self.rng, n, self.p)
    }

    fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        match self.keep(x.elem_count()) {
            Some(mask) => grad::mask_mul(x, mask, 1),
            None => Ok(x.clone()),
        }
    }
}

/// LayerNorm epsilon of PyTorch's `TransformerEncoderLayer`.
const LN_EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(d, "weight")?,
            bias: vb.get(d, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, Some((&self.weight, &self.bias)), LN_EPS, true)
    }

    fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        grad::layer_norm(x, &self.weight, &self.bias, LN_EPS)
    }
}

/// A PyTorch `nn.Linear` (`weight [out, in]`, `bias [out]`).
#[derive(Debug, Clone)]
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn new(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Self> {
        let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        let bound = 1.0 / (d_in as f64).sqrt();
        Ok(Self {
            weight: vb.get_with_hints((d_out, d_in), "weight", init)?,
            bias: vb.get_with_hints(
                d_out,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?,
        })
    }

    /// `x: [N, in]` or `[B, T, in]` -> `[.., out]` (inference kernels).
    fn forward(&self, x: &Tensor, gelu: bool) -> Result<Tensor> {
        self.on_rows(x, |rows| {
            ops::linear(rows, &self.weight, &self.bias, gelu, true)
        })
    }

    /// As [`Dense::forward`] with the differentiable kernels.
    fn forward_train(&self, x: &Tensor, gelu: bool) -> Result<Tensor> {
        self.on_rows(x, |rows| grad::linear(rows, &self.weight, &self.bias, gelu))
    }

    /// Applies a 2-D linear form `f` to `x` flattened to `[rows, in]`, restoring the leading
    /// dims with `out` features.
    fn on_rows(&self, x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let last = dims.len().saturating_sub(1);
        let d_in = dims.get(last).copied().unwrap_or(1);
        let y = f(&x.reshape((x.elem_count() / d_in.max(1), d_in))?)?;
        if let Some(d) = dims.get_mut(last) {
            *d = self.weight.dim(0)?;
        }
        y.reshape(dims)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: Dense,
    linear1: Dense,
    linear2: Dense,
    norm1: Norm,
    norm2: Norm,
    num_heads: usize,
    d: usize,
}

impl EncoderLayer {
    fn new(cfg: &ActorEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.latent_dim;
        let attn = vb.pp("self_attn");
        Ok(Self {
            in_proj_weight: attn.get((3 * d, d), "in_proj_weight")?,
            in_proj_bias: attn.get(3 * d, "in_proj_bias")?,
            out_proj: Dense::new(d, d, attn.pp("out_proj"))?,
            linear1: Dense::new(d, cfg.ff_size, vb.pp("linear1"))?,
            linear2: Dense::new(cfg.ff_size, d, vb.pp("linear2"))?,
            norm1: Norm::new(d, vb.pp("norm1"))?,
            norm2: Norm::new(d, vb.pp("norm2"))?,
            num_heads: cfg.num_heads,
            d,
        })
    }

    /// One post-norm layer at inference on packed rows.
    ///
    /// `x [N, d]` holds only the valid positions (tokens included), sample after sample, as
    /// `pack` describes; attention runs on the packed rows directly (each sample attends to its
    /// own rows), and so do the linear layers and the feed-forward (PyTorch's fast path does
    /// the same with nested tensors). When `last`, only the two token rows per sample are
    /// computed (`[2B, d]` out): nothing else reaches the encoder output.
    fn forward(&self, x: &Tensor, pack: &Packing, last: bool) -> Result<Tensor> {
        let (d, h) = (self.d, self.num_heads);
        let (xq, attn) = if last {
            let xq = x.index_select(&pack.token_rows, 0)?;
            let q = ops::linear(
                &xq,
                &self.in_proj_weight.narrow(0, 0, d)?,
                &self.in_proj_bias.narrow(0, 0, d)?,
                false,
                true,
            )?;
            let kv = ops::linear(
                x,
                &self.in_proj_weight.narrow(0, d, 2 * d)?,
                &self.in_proj_bias.narrow(0, d, 2 * d)?,
                false,
                true,
            )?;
            let (k, v) = (kv.narrow(1, 0, d)?, kv.narrow(1, d, d)?);
            let attn =
                ops::packed_attention(&q, &k, &v, h, &pack.token_offsets, &pack.offsets, false)?;
            (xq, attn)
        } else {
            let qkv = ops::linear(x, &self.in_proj_weight, &self.in_proj_bias, false, true)?;
            let (q, k, v) = (
                qkv.narrow(1, 0, d)?,
                qkv.narrow(1, d, d)?,
                qkv.narrow(1, 2 * d, d)?,
            );
            let attn = ops::packed_attention(&q, &k, &v, h, &pack.offsets, &pack.offsets, false)?;
            (x.clone(), attn)
        };
        let out = &self.out_proj;
        let x = self.norm1.forward(&ops::linear_residual(
            &attn,
            &out.weight,
            &out.bias,
            &xq,
            true,
        )?)?;
        let ff = self.linear1.forward(&x, true)?;
        let (w2, b2) = (&self.linear2.weight, &self.linear2.bias);
        self.norm2
            .forward(&ops::linear_residual(&ff, w2, b2, &x, true)?)
    }

    /// The training form of [`EncoderLayer::forward`]: differentiable fused kernels, dropout
    /// on the attention weights, the attention output and the feed-forward hidden and output
    /// layers (PyTorch's `TransformerEncoderLayer`, drawn in that order). Attention runs on the
    /// padded `[B, L]` layout with `bias [B, L]` excluding padded keys.
    fn forward_train(
        &self,
        x: &Tensor,
        bias: &Tensor,
        pack: &Packing,
        last: bool,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        let (b, l, d, h) = (pack.b, pack.l, self.d, self.num_heads);
        let lq = if last { 2 } else { l };
        let (xq, attn) = if last {
            let xq = x.index_select(&pack.token_rows, 0)?;
            let q = grad::linear(
                &xq,
                &self.in_proj_weight.narrow(0, 0, d)?,
                &self.in_proj_bias.narrow(0, 0, d)?,
                false,
            )?
            .reshape((b, 2, d))?;
            let kv = pack.unpack(&grad::linear(
                x,
                &self.in_proj_weight.narrow(0, d, 2 * d)?,
                &self.in_proj_bias.narrow(0, d, 2 * d)?,
                false,
            )?)?;
            let keep = dropout.keep(b * h * lq * l);
            let attn = grad::attention(
                &q,
                &kv.narrow(2, 0, d)?,
                &kv.narrow(2, d, d)?,
                h,
                Some(bias),
                keep,
            )?;
            (xq, attn.reshape((b * lq, d))?)
        } else {
            let qkv = pack.unpack(&grad::linear(
                x,
                &self.in_proj_weight,
                &self.in_proj_bias,
                false,
            )?)?;
            let keep = dropout.keep(b * h * lq * l);
            let attn = grad::self_attention(&qkv, h, Some(bias), keep)?;
            let attn = attn
                .reshape((b * l, d))?
                .index_select(&pack.valid_rows, 0)?;
            (x.clone(), attn)
        };
        let attn = dropout.apply(&self.out_proj.forward_train(&attn, false)?)?;
        let x = self.norm1.forward_train(&(xq + attn)?)?;
        // GELU and its dropout fused into the first linear node.
        let ff = self.linear1.on_rows(&x, |rows| {
            let keep = dropout.keep(rows.dim(0)? * self.linear1.weight.dim(0)?);
            grad::linear_gelu_dropout(rows, &self.linear1.weight, &self.linear1.bias, keep)
        })?;
        let ff = dropout.apply(&self.linear2.forward_train(&ff, false)?)?;
        self.norm2.forward_train(&(x + ff)?)
    }
}

/// Maps the `N` valid positions of a padded `[B, L]` batch to packed rows and back.
struct Packing {
    b: usize,
    l: usize,
    /// `[N]` u32: flat `b * L + p` index of each valid position, sample by sample.
    valid_rows: Tensor,
    /// `[B * L]` u32: packed row of each position; padded positions point at row `N`
    /// (a zero row appended by [`Packing::unpack`]).
    scatter: Tensor,
    /// `[2B]` u32: packed rows of the two token positions of each sample.
    token_rows: Tensor,
    /// `B + 1` cumulative packed-row counts: sample `i` owns rows `offsets[i]..offsets[i + 1]`.
    offsets: Vec<usize>,
    /// `0, 2, 4, ..., 2B`: the two token rows of each sample in `[2B, d]`.
    token_offsets: Vec<usize>,
    n: usize,
}

impl Packing {
    /// `key_valid [B][L]` (1 = valid); the first two positions of every row (the tokens) must
    /// be valid.
    fn new(key_valid: &[Vec<u8>], device: &Device) -> Result<Self> {
        let b = key_valid.len();
        let l = key_valid.first().map_or(0, Vec::len);
        let mut valid_rows = Vec::new();
        let mut scatter = Vec::with_capacity(b * l);
        let mut token_rows = Vec::with_capacity(2 * b);
        let mut offsets = Vec::with_capacity(b + 1);
        offsets.push(0);
        for (bi, row) in key_valid.iter().enumerate() {
            for (p, &v) in row.iter().enumerate() {
                if v != 0 {
                    if p < 2 {
                        token_rows.push(valid_rows.len() as u32);
                    }
                    scatter.push(valid_rows.len() as u32);
                    valid_rows.push((bi * l + p) as u32);
                } else {
                    scatter.push(u32::MAX);
                }
            }
            offsets.push(valid_rows.len());
        }
        let n = valid_rows.len();
        for s in scatter.iter_mut().filter(|s| **s == u32::MAX) {
            *s = n as u32;
        }
        Ok(Self {
            b,
            l,
            valid_rows: Tensor::from_vec(valid_rows, n, device)?,
            scatter: Tensor::from_vec(scatter, b * l, device)?,
            token_rows: Tensor::from_vec(token_rows, 2 * b, device)?,
            offsets,
            token_offsets: (0..=b).map(|i| 2 * i).collect(),
            n,
        })
    }

    /// Padded `[B * L, c]` -> packed `[N, c]`.
    fn pack(&self, x: &Tensor) -> Result<Tensor> {
        x.index_select(&self.valid_rows, 0)
    }

    /// Packed `[N, c]` -> padded `[B, L, c]`, zero at padded positions.
    fn unpack(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        debug_assert_eq!(x.dim(0)?, self.n);
        let with_zero = Tensor::cat(&[x, &Tensor::zeros((1, c), x.dtype(), x.device())?], 0)?;
        with_zero
            .index_select(&self.scatter, 0)?
            .reshape((self.b, self.l, c))
    }
}

/// An ACTOR/TMR transformer encoder: `[B, T, nfeats]` + mask -> `[B, 2, d]` (mu, logvar tokens).
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use tmr::{ActorEncoder, ActorEncoderConfig};
///
/// let cfg = ActorEncoderConfig { nfeats: 6, latent_dim: 8, ff_size: 16, num_layers: 1, num_heads: 2, dropout: 0.0 };
/// let varmap = VarMap::new();
/// let enc = ActorEncoder::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
/// let x = Tensor::zeros((3, 5, 6), DType::F32, &Device::Cpu)?;
/// let mask = Tensor::ones((3, 5), DType::F32, &Device::Cpu)?;
/// assert_eq!(enc.forward(&x, &mask)?.dims(), &[3, 2, 8]);
/// # Ok::<(), candle::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ActorEncoder {
    cfg: ActorEncoderConfig,
    tokens: Tensor,
    projection: Dense,
    layers: Vec<EncoderLayer>,
}

impl ActorEncoder {
    /// Builds the encoder from a [`VarBuilder`] rooted at the state-dict root (keys `tokens`,
    /// `projection.*`, `seqTransEncoder.layers.N.*`), e.g. `VarBuilder::from_pth` on the
    /// reference `tmr-motion_encoder.pt`.
    pub fn new(cfg: &ActorEncoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.latent_dim;
        let tokens = vb.get_with_hints(
            (2, d),
            "tokens",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        let projection = Dense::new(cfg.nfeats, d, vb.pp("projection"))?;
        let layers = (0..cfg.num_layers)
            .map(|n| EncoderLayer::new(cfg, vb.pp(format!("seqTransEncoder.layers.{n}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            tokens,
            projection,
            layers,
        })
    }

    /// The configuration this encoder was built with.
    pub fn config(&self) -> &ActorEncoderConfig {
        &self.cfg
    }

    /// Encodes a padded batch (inference: no dropout, fused kernels).
    ///
    /// # Shapes
    /// - `x`: `[B, T, nfeats]` float;
    /// - `mask`: `[B, T]`, 1 = valid, 0 = padding; f32 (1.0 / 0.0) or u8 (any non-zero = valid);
    /// - returns `[B, 2, latent_dim]`: row 0 = mu, row 1 = logvar.
    ///
    /// Padded positions are ignored entirely (their content does not change the result).
    pub fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_impl(x, mask, None)
    }

    /// The mu embedding only: `forward(x, mask)[:, 0]`.
    ///
    /// # Shapes
    /// `x [B, T, nfeats]`, `mask [B, T]` -> `[B, latent_dim]`.
    pub fn encode_mu(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward(x, mask)?.narrow(1, 0, 1)?.squeeze(1)
    }

    /// Training forward: differentiable fused kernels ([`kernels::grad`]), dropout with
    /// probability `cfg.dropout` drawn from `rng` (attention weights, attention output,
    /// feed-forward hidden and output, as PyTorch's `TransformerEncoderLayer`).
    ///
    /// # Shapes
    /// Same as [`ActorEncoder::forward`].
    pub fn forward_train(&self, x: &Tensor, mask: &Tensor, rng: &mut StdRng) -> Result<Tensor> {
        let mut dropout = Dropout {
            p: self.cfg.dropout,
            rng,
        };
        self.forward_impl(x, mask, Some(&mut dropout))
    }

    /// Inference when `dropout` is `None`, training otherwise.
    fn forward_impl(
        &self,
        x: &Tensor,
        mask: &Tensor,
        dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (b, t, n) = x.dims3()?;
        if n != self.cfg.nfeats {
            candle::bail!(
                "ActorEncoder: input has {n} features per position (shape {:?}), the encoder expects nfeats = {}",
                x.dims(),
                self.cfg.nfeats
            );
        }
        let mask_dims = mask.dims();
        if mask_dims != [b, t] {
            candle::bail!(
                "ActorEncoder: mask shape {mask_dims:?} does not match input shape {:?} (expected [{b}, {t}])",
                x.dims()
            );
        }
        let dtype = x.dtype();
        let device = x.device();
        let d = self.cfg.latent_dim;
        // valid [B, T] as u8 (1 = valid), whatever the mask dtype.
        let valid = mask.ne(0f64)?;
        let x = valid
            .unsqueeze(2)?
            .broadcast_as(x.shape())?
            .where_cond(x, &x.zeros_like()?)?;
        let z = match dropout {
            Some(_) => self.projection.forward_train(&x, false)?,
            None => self.projection.forward(&x, false)?,
        };
        let tokens = self.tokens.unsqueeze(0)?.broadcast_as((b, 2, d))?;
        let seq = Tensor::cat(&[&tokens.to_dtype(dtype)?, &z], 1)?;
        let pe = sinusoidal_table(t + 2, d, device)?.to_dtype(dtype)?;
        let seq = seq.broadcast_add(&pe)?;
        let key_valid = Tensor::cat(
            &[
                &Tensor::ones((b, 2), DType::U8, device)?,
                &valid.to_dtype(DType::U8)?,
            ],
            1,
        )?;
        let pack = Packing::new(&key_valid.to_device(&Device::Cpu)?.to_vec2::<u8>()?, device)?;
        let mut rows = pack.pack(&seq.reshape((b * (t + 2), d))?)?;
        if self.layers.is_empty() {
            return rows.index_select(&pack.token_rows, 0)?.reshape((b, 2, d));
        }
        let last = self.layers.len() - 1;
        match dropout {
            None => {
                for (i, layer) in self.layers.iter().enumerate() {
                    rows = layer.forward(&rows, &pack, i == last)?;
                }
            }
            Some(dropout) => {
                // Additive key bias [B, T+2]: 0 for valid keys, -1e9 for padded ones. The two
                // token keys are always valid, so no row is fully masked (no NaN); exp(-1e9 -
                // max) underflows to exactly 0, as -inf would.
                let bias = key_valid.where_cond(
                    &Tensor::zeros((b, t + 2), dtype, device)?,
                    &Tensor::full(-1e9f32, (b, t + 2), device)?.to_dtype(dtype)?,
                )?;
                for (i, layer) in self.layers.iter().enumerate() {
                    rows = layer.forward_train(&rows, &bias, &pack, i == last, dropout)?;
                }
            }
        }
        rows.reshape((b, 2, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_rows_follow_the_formula() -> Result<()> {
        // By hand: row 0 = [0, 1, 0, 1, ...]; row 1, channel pair 0 has w_0 = 1.
        let pe = sinusoidal_table(2, 4, &Device::Cpu)?.to_vec2::<f32>()?;
        assert_eq!(pe[0], vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(pe[1][0], 1f32.sin());
        assert_eq!(pe[1][1], 1f32.cos());
        // w_1 = exp(2 * -ln(10000) / 4) = 0.01.
        assert!((pe[1][2] - 0.01f32.sin()).abs() < 1e-7);
        Ok(())
    }

    #[test]
    fn packing_round_trips_and_zeroes_padding() -> Result<()> {
        let valid = vec![vec![1u8, 1, 1, 0], vec![1, 1, 0, 0]];
        let pack = Packing::new(&valid, &Device::Cpu)?;
        assert_eq!(pack.n, 5);
        assert_eq!(pack.token_rows.to_vec1::<u32>()?, vec![0, 1, 3, 4]);
        let x = Tensor::arange(0f32, 8.0, &Device::Cpu)?.reshape((8, 1))?;
        let packed = pack.pack(&x)?;
        assert_eq!(
            packed.flatten_all()?.to_vec1::<f32>()?,
            vec![0.0, 1.0, 2.0, 4.0, 5.0]
        );
        let back = pack.unpack(&packed)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(back, vec![0.0, 1.0, 2.0, 0.0, 4.0, 5.0, 0.0, 0.0]);
        Ok(())
    }
}
