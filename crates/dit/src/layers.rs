//! Transformer layers of the reference DiT (Peebles & Xie, "Scalable Diffusion Models with
//! Transformers", 2023; pre-LayerNorm blocks as in Xiong et al., "On Layer Normalization in the
//! Transformer Architecture", 2020), with weight names equal to the PyTorch module paths.
//!
//! Every layer runs in one of two modes given by [`Ctx`]: inference (fused CPU kernels, no
//! gradient, deterministic) or training (differentiable ops; dropout and stochastic depth drawn
//! from a seeded RNG). Training uses the differentiable fused kernels of `kernels::grad` on CPU
//! `f32` tensors (`Ctx::kernels`), the plain candle ops otherwise.

use std::sync::{Arc, OnceLock};

use candle::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use rand::Rng;
use rand::rngs::StdRng;

use crate::ops;
use kernels::attention::fused_attention;
use kernels::bf16::Bf16Linear;
use kernels::ops::Activation;

/// LayerNorm epsilon of every norm in the reference network.
pub(crate) const LN_EPS: f64 = 1e-6;

/// Forward context: `train` is `None` in inference.
pub(crate) struct Ctx<'a> {
    pub train: Option<&'a mut StdRng>,
    pub dropout: f64,
    pub stochastic_depth: f64,
    /// Training with the differentiable fused kernels (`kernels::grad`) where they apply.
    pub kernels: bool,
    /// Inference products in bfloat16 (`kernels::bf16`) where the fused kernels apply.
    pub bf16: bool,
}

impl Ctx<'_> {
    /// Inference, with bfloat16 products when `bf16`.
    pub fn eval(bf16: bool) -> Ctx<'static> {
        Ctx {
            train: None,
            dropout: 0.0,
            stochastic_depth: 0.0,
            kernels: false,
            bf16,
        }
    }

    /// Inference on the bfloat16 kernels for `x` (CPU `f32`).
    fn bf16_kernels(&self, x: &Tensor) -> bool {
        self.bf16 && self.train.is_none() && ops::fast_ok(x)
    }

    /// Inference uses the fused kernels.
    pub fn fast(&self) -> bool {
        self.train.is_none()
    }

    /// Training with the differentiable fused kernels on `x` (CPU `f32`).
    pub fn grad_kernels(&self, x: &Tensor) -> bool {
        self.train.is_some() && self.kernels && ops::fast_ok(x)
    }

    /// The multipliers of an inverted dropout of `n` elements with probability `self.dropout`
    /// (0 or `1 / (1 - p)`, row-major), or `None` when no dropout applies.
    pub fn dropout_keep(&mut self, n: usize) -> Option<Vec<f32>> {
        let p = self.dropout;
        match self.train.as_deref_mut() {
            Some(rng) => kernels::grad::dropout_keep(rng, n, p),
            None => None,
        }
    }

    /// Element-wise inverted dropout with probability `self.dropout` (identity in inference).
    pub fn dropout(&mut self, x: &Tensor) -> Result<Tensor> {
        let fused = self.grad_kernels(x);
        match self.dropout_keep(x.elem_count()) {
            Some(m) if fused => kernels::grad::mask_mul(x, m, 1),
            Some(m) => x.mul(&Tensor::from_vec(m, x.shape(), x.device())?),
            None => Ok(x.clone()),
        }
    }

    /// Stochastic depth (Huang et al., "Deep Networks with Stochastic Depth", 2016): drops the
    /// residual branch `[B, ...]` of a whole sample with probability `self.stochastic_depth`,
    /// scaling kept branches by `1 / (1 - p)`.
    pub fn drop_path(&mut self, x: &Tensor) -> Result<Tensor> {
        let p = self.stochastic_depth;
        let fused = self.grad_kernels(x);
        match self.train.as_deref_mut() {
            Some(rng) if p > 0.0 => {
                let b = x.dim(0)?;
                let keep = 1.0 / (1.0 - p) as f32;
                let m: Vec<f32> = (0..b)
                    .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
                    .collect();
                if fused {
                    return kernels::grad::mask_mul(x, m, x.elem_count() / b.max(1));
                }
                let mut shape = vec![1usize; x.rank()];
                shape[0] = b;
                x.broadcast_mul(&Tensor::from_vec(m, shape, x.device())?)
            }
            _ => Ok(x.clone()),
        }
    }

    /// The residual update `h + drop_path(gate * y)` (`gate: [B, D]` per sample, `None`: no
    /// gate) of a block with stochastic depth.
    ///
    /// On the training kernels the per-sample keep factors scale the small gate, not the
    /// `[B, N, D]` branch: `h + (s gate) y` is one fused gated-residual node, with no separate
    /// mask pass or gradient buffer for the branch. The random draws are those of
    /// [`Ctx::drop_path`]; elsewhere it is the plain formula.
    ///
    /// # Shapes
    /// `h`, `y: [B, N, D]`, `gate: [B, D]` -> `[B, N, D]`.
    pub fn residual(&mut self, h: &Tensor, y: &Tensor, gate: Option<&Tensor>) -> Result<Tensor> {
        if !self.grad_kernels(h) {
            let y = self.drop_path(y)?;
            return match gate {
                Some(g) => ops::gated_residual(h, &y, g, self.fast()),
                None => h + y,
            };
        }
        let gate = match gate {
            Some(g) => self.drop_path(g)?,
            None if self.stochastic_depth > 0.0 => {
                // The per-sample factors drawn by `drop_path`, spread over the channels.
                let (b, _, d) = h.dims3()?;
                self.drop_path(&Tensor::ones((b, d), DType::F32, h.device())?)?
            }
            None => return h + y,
        };
        kernels::grad::gated_residual(h, y, &gate)
    }
}

/// `y = x W^T + b`, PyTorch `nn.Linear` layout (`weight [out, in]`, `bias [out]`).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    w: Tensor,
    b: Tensor,
    /// The weight rounded to bfloat16, made once by [`Linear::bf16`] (shared by clones).
    bf16: OnceLock<Arc<Bf16Linear>>,
}

impl Linear {
    pub fn new(vb: VarBuilder, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self {
            w: vb.get((d_out, d_in), "weight")?,
            b: vb.get(d_out, "bias")?,
            bf16: OnceLock::new(),
        })
    }

    /// The bfloat16 form of the weight, converted on the first call.
    pub fn bf16(&self) -> Result<&Bf16Linear> {
        if let Some(w) = self.bf16.get() {
            return Ok(w);
        }
        let w = Arc::new(Bf16Linear::new(&self.w)?);
        Ok(self.bf16.get_or_init(|| w))
    }

    /// Applies a 2-D linear form `f` to `x` flattened to `[rows, in]`, restoring the leading
    /// dims with `out` features.
    fn on_rows(&self, x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let d_in = dims.last().copied().unwrap_or(0);
        let y = f(&x.reshape((x.elem_count() / d_in.max(1), d_in))?)?;
        if let Some(last) = dims.last_mut() {
            *last = self.w.dim(0)?;
        }
        y.reshape(dims)
    }

    fn apply(&self, x: &Tensor, gelu: bool, ctx: &Ctx) -> Result<Tensor> {
        self.on_rows(x, |x2| {
            if ctx.bf16_kernels(x) {
                let act = if gelu {
                    Activation::GeluErf
                } else {
                    Activation::Identity
                };
                self.bf16()?.forward(x2, &self.b, act)
            } else if ctx.grad_kernels(x) {
                kernels::grad::linear(x2, &self.w, &self.b, gelu)
            } else {
                ops::linear(x2, &self.w, &self.b, gelu, ctx.fast())
            }
        })
    }

    /// # Shapes
    /// `x: [..., in]` -> `[..., out]`.
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.apply(x, false, ctx)
    }

    /// `residual + Linear(x)`; in inference one fused op (the product accumulates into
    /// `residual + bias`).
    ///
    /// # Shapes
    /// `x: [..., in]`, `residual: [..., out]` -> `[..., out]`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        if ctx.grad_kernels(x) {
            return residual + self.forward(x, ctx)?;
        }
        let d_in = x.dim(candle::D::Minus1)?;
        let n = x.elem_count() / d_in.max(1);
        let d_out = self.w.dim(0)?;
        let (x2, r2) = (x.reshape((n, d_in))?, residual.reshape((n, d_out))?);
        let y = if ctx.bf16_kernels(x) && ops::fast_ok(residual) {
            self.bf16()?.forward_residual(&x2, &self.b, &r2)?
        } else {
            ops::linear_residual(&x2, &self.w, &self.b, &r2, ctx.fast())?
        };
        y.reshape(residual.shape())
    }

    /// `gelu_erf(Linear(x))`, fused in inference.
    pub fn forward_gelu(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.apply(x, true, ctx)
    }

    /// `dropout(gelu_erf(Linear(x)))`: in training on the kernels one differentiable op (the
    /// dropout multipliers drawn as [`Ctx::dropout`] would draw them), otherwise the two steps.
    ///
    /// # Shapes
    /// `x: [..., in]` -> `[..., out]`.
    pub fn forward_gelu_dropout(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if !ctx.grad_kernels(x) {
            let h = self.forward_gelu(x, ctx)?;
            return ctx.dropout(&h);
        }
        self.on_rows(x, |rows| {
            let keep = ctx.dropout_keep(rows.dim(0)? * self.w.dim(0)?);
            kernels::grad::linear_gelu_dropout(rows, &self.w, &self.b, keep)
        })
    }
}

/// Affine LayerNorm (eps 1e-6).
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    w: Tensor,
    b: Tensor,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, d: usize) -> Result<Self> {
        Ok(Self {
            w: vb.get(d, "weight")?,
            b: vb.get(d, "bias")?,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        if ctx.grad_kernels(x) {
            return kernels::grad::layer_norm(x, &self.w, &self.b, LN_EPS);
        }
        ops::layer_norm(x, Some((&self.w, &self.b)), LN_EPS, ctx.fast())
    }
}

/// `[B, N, D]` -> `[B*H, N, dh]`, heads split channel-major (`channel = head * dh + j`).
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    x.reshape((b, n, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * heads, n, d / heads))
}

/// Multi-head scaled dot-product attention (Vaswani et al., "Attention Is All You Need", 2017)
/// on heads already split: `q: [B*H, Nq, dh]`, `k, v: [B*H, Nk, dh]`, optional additive key
/// bias `[B, Nk]`. Returns `[B, Nq, H*dh]`.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    batch: usize,
    bias: Option<&Tensor>,
    ctx: &mut Ctx,
) -> Result<Tensor> {
    let (bh, nq, dh) = q.dims3()?;
    let nk = k.dim(1)?;
    let heads = bh / batch;
    let q = (q * (1.0 / (dh as f64).sqrt()))?;
    let logits = q.matmul(&k.t()?)?.reshape((batch, heads, nq, nk))?;
    let p = ops::attention_softmax(&logits, bias, ctx.fast())?;
    let p = ctx.dropout(&p)?;
    p.reshape((bh, nq, nk))?
        .matmul(v)?
        .reshape((batch, heads, nq, dh))?
        .transpose(1, 2)?
        .reshape((batch, nq, heads * dh))
}

/// Self-attention with one packed `qkv` projection (`[q | k | v]`) and an output projection.
#[derive(Debug, Clone)]
pub(crate) struct SelfAttention {
    qkv: Linear,
    out: Linear,
    heads: usize,
}

impl SelfAttention {
    /// Its linear layers.
    pub fn linears(&self) -> [&Linear; 2] {
        [&self.qkv, &self.out]
    }

    pub fn new(vb: VarBuilder, d: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            qkv: Linear::new(vb.pp("qkv"), d, 3 * d)?,
            out: Linear::new(vb.pp("out"), d, d)?,
            heads,
        })
    }

    /// # Shapes
    /// `x: [B, N, D]`, `bias: [B, N]` (additive, per key) -> `[B, N, D]`.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let h = self.heads;
        if ctx.fast() && ops::fast_ok(x) {
            return self.out.forward(&self.fused_heads(x, bias, ctx)?, ctx);
        }
        if ctx.grad_kernels(x) {
            let qkv = self.qkv.forward(x, ctx)?;
            let keep = ctx.dropout_keep(b * h * n * n);
            let a = kernels::grad::self_attention(&qkv, h, bias, keep)?;
            return self.out.forward(&a, ctx);
        }
        let qkv = self
            .qkv
            .forward(x, ctx)?
            .reshape((b, n, 3, h, d / h))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let get = |i: usize| qkv.get(i)?.reshape((b * h, n, d / h));
        let a = attend(&get(0)?, &get(1)?, &get(2)?, b, bias, ctx)?;
        self.out.forward(&a, ctx)
    }
}

impl SelfAttention {
    /// Inference: the merged heads before the output projection (fused attention on the
    /// packed `qkv` projection read in place).
    fn fused_heads(&self, x: &Tensor, bias: Option<&Tensor>, ctx: &Ctx) -> Result<Tensor> {
        let d = x.dim(2)?;
        let qkv = self.qkv.forward(x, ctx)?;
        fused_attention(
            &qkv.narrow(2, 0, d)?,
            &qkv.narrow(2, d, d)?,
            &qkv.narrow(2, 2 * d, d)?,
            self.heads,
            bias,
        )
    }

    /// Inference: `residual + SA(x)`, the output projection accumulating into the residual.
    ///
    /// # Shapes
    /// `x`, `residual: [B, N, D]`, `bias: [B, N]` -> `[B, N, D]`.
    pub fn forward_residual_fast(
        &self,
        x: &Tensor,
        bias: Option<&Tensor>,
        residual: &Tensor,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        self.out
            .forward_residual(&self.fused_heads(x, bias, ctx)?, residual, ctx)
    }
}

/// Cross-attention: queries from the motion tokens (`q`), keys and values from the condition
/// tokens through one packed projection (`kv`, `[k | v]`).
#[derive(Debug, Clone)]
pub(crate) struct CrossAttention {
    q: Linear,
    kv: Linear,
    out: Linear,
    heads: usize,
}

impl CrossAttention {
    /// Its linear layers.
    pub fn linears(&self) -> [&Linear; 3] {
        [&self.q, &self.kv, &self.out]
    }

    pub fn new(vb: VarBuilder, d: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: Linear::new(vb.pp("q"), d, d)?,
            kv: Linear::new(vb.pp("kv"), d, 2 * d)?,
            out: Linear::new(vb.pp("out"), d, d)?,
            heads,
        })
    }

    /// # Shapes
    /// `x: [B, N, D]`, `cond: [B, L, D]`, `bias: [B, L]` -> `[B, N, D]`.
    pub fn forward(
        &self,
        x: &Tensor,
        cond: &Tensor,
        bias: Option<&Tensor>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let l = cond.dim(1)?;
        let h = self.heads;
        if ctx.fast() && ops::fast_ok(x) {
            return self
                .out
                .forward(&self.fused_heads(x, cond, bias, ctx)?, ctx);
        }
        if ctx.grad_kernels(x) {
            let q = self.q.forward(x, ctx)?;
            let kv = self.kv.forward(cond, ctx)?;
            let keep = ctx.dropout_keep(b * h * n * l);
            let a = kernels::grad::attention(
                &q,
                &kv.narrow(2, 0, d)?,
                &kv.narrow(2, d, d)?,
                h,
                bias,
                keep,
            )?;
            return self.out.forward(&a, ctx);
        }
        let q = split_heads(&self.q.forward(x, ctx)?, h)?;
        let kv = self
            .kv
            .forward(cond, ctx)?
            .reshape((b, l, 2, h, d / h))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let k = kv.get(0)?.reshape((b * h, l, d / h))?;
        let v = kv.get(1)?.reshape((b * h, l, d / h))?;
        let a = attend(&q, &k, &v, b, bias, ctx)?;
        self.out.forward(&a, ctx)
    }
}

impl CrossAttention {
    /// Inference: the merged heads before the output projection.
    fn fused_heads(
        &self,
        x: &Tensor,
        cond: &Tensor,
        bias: Option<&Tensor>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let d = x.dim(2)?;
        let q = self.q.forward(x, ctx)?;
        let kv = self.kv.forward(cond, ctx)?;
        fused_attention(
            &q,
            &kv.narrow(2, 0, d)?,
            &kv.narrow(2, d, d)?,
            self.heads,
            bias,
        )
    }
}

/// The MLP `ffn.0 -> GELU(erf) -> dropout -> ffn.3`.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// Its linear layers.
    pub fn linears(&self) -> [&Linear; 2] {
        [&self.fc1, &self.fc2]
    }

    pub fn new(vb: VarBuilder, d: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(vb.pp("0"), d, hidden)?,
            fc2: Linear::new(vb.pp("3"), hidden, d)?,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = self.fc1.forward_gelu_dropout(x, ctx)?;
        self.fc2.forward(&h, ctx)
    }
}

/// Pre-LN self-attention block: `z += SA(LN_a(z)); z += MLP(LN_b(z))`.
#[derive(Debug, Clone)]
pub(crate) struct PreLnBlock {
    initial_ln: LayerNorm,
    sa: SelfAttention,
    middle_ln: LayerNorm,
    ffn: Mlp,
}

impl PreLnBlock {
    /// Its linear layers.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut l = self.sa.linears().to_vec();
        l.extend(self.ffn.linears());
        l
    }

    pub fn new(vb: VarBuilder, d: usize, heads: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            initial_ln: LayerNorm::new(vb.pp("initial_ln"), d)?,
            sa: SelfAttention::new(vb.pp("sa"), d, heads)?,
            middle_ln: LayerNorm::new(vb.pp("middle_ln"), d)?,
            ffn: Mlp::new(vb.pp("ffn"), d, hidden)?,
        })
    }

    /// # Shapes
    /// `z: [B, N, D]`, `bias: [B, N]` -> `[B, N, D]`.
    pub fn forward(&self, z: &Tensor, bias: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        if ctx.fast() && ops::fast_ok(z) {
            // Inference: both residual adds fused into the closing projections.
            let z =
                self.sa
                    .forward_residual_fast(&self.initial_ln.forward(z, ctx)?, bias, z, ctx)?;
            let hid = self
                .ffn
                .fc1
                .forward_gelu(&self.middle_ln.forward(&z, ctx)?, ctx)?;
            return self.ffn.fc2.forward_residual(&hid, &z, ctx);
        }
        let a = self
            .sa
            .forward(&self.initial_ln.forward(z, ctx)?, bias, ctx)?;
        let z = ctx.residual(z, &a, None)?;
        let m = self.ffn.forward(&self.middle_ln.forward(&z, ctx)?, ctx)?;
        ctx.residual(&z, &m, None)
    }
}

/// AdaLN block: `(shift, scale, gate) x 2 = Linear(SiLU(c))`,
/// `h += gate * f(LN(h) * (1 + scale) + shift)` for `f` = self-attention, then MLP.
#[derive(Debug, Clone)]
pub(crate) struct AdaLnBlock {
    modulation: Linear,
    sa: SelfAttention,
    ffn: Mlp,
    d: usize,
}

impl AdaLnBlock {
    /// Its linear layers.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut l = vec![&self.modulation];
        l.extend(self.sa.linears());
        l.extend(self.ffn.linears());
        l
    }

    pub fn new(vb: VarBuilder, d: usize, heads: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            modulation: Linear::new(vb.pp("adaln_modulation.1"), d, 6 * d)?,
            sa: SelfAttention::new(vb.pp("sa"), d, heads)?,
            ffn: Mlp::new(vb.pp("ffn"), d, hidden)?,
            d,
        })
    }

    /// # Shapes
    /// `h: [B, N, D]`, `silu_c: [B, D]`, `bias: [B, N]` -> `[B, N, D]`.
    pub fn forward(
        &self,
        h: &Tensor,
        silu_c: &Tensor,
        bias: Option<&Tensor>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let m = self.modulation.forward(silu_c, ctx)?;
        let chunk = |i: usize| m.narrow(1, i * self.d, self.d);
        let (grad, fast) = (ctx.grad_kernels(h), ctx.fast());
        let modulate = |x: &Tensor, scale: usize, shift: usize| {
            let (sc, sh) = (chunk(scale)?, chunk(shift)?);
            if grad {
                kernels::grad::ln_modulate(x, &sc, &sh, LN_EPS)
            } else {
                ops::ln_modulate(x, &sc, &sh, LN_EPS, fast)
            }
        };
        let a = self.sa.forward(&modulate(h, 1, 0)?, bias, ctx)?;
        let h = ctx.residual(h, &a, Some(&chunk(2)?))?;
        let b = self.ffn.forward(&modulate(&h, 4, 3)?, ctx)?;
        ctx.residual(&h, &b, Some(&chunk(5)?))
    }
}

/// Cross-attention block: `h += CA(LN(h), cond)`, then a pre-LN self-attention block.
#[derive(Debug, Clone)]
pub(crate) struct CrossBlock {
    ca_ln: LayerNorm,
    ca: CrossAttention,
    block: PreLnBlock,
}

impl CrossBlock {
    /// Its linear layers.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut l = self.ca.linears().to_vec();
        l.extend(self.block.linears());
        l
    }

    pub fn new(vb: VarBuilder, d: usize, heads: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            ca_ln: LayerNorm::new(vb.pp("ca_ln"), d)?,
            ca: CrossAttention::new(vb.pp("ca"), d, heads)?,
            block: PreLnBlock::new(vb, d, heads, hidden)?,
        })
    }

    /// # Shapes
    /// `h: [B, N, D]`, `cond: [B, L, D]`, `cond_bias: [B, L]`, `bias: [B, N]` -> `[B, N, D]`.
    pub fn forward(
        &self,
        h: &Tensor,
        cond: &Tensor,
        cond_bias: Option<&Tensor>,
        bias: Option<&Tensor>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let h = if ctx.fast() && ops::fast_ok(h) {
            let a = self
                .ca
                .fused_heads(&self.ca_ln.forward(h, ctx)?, cond, cond_bias, ctx)?;
            self.ca.out.forward_residual(&a, h, ctx)?
        } else {
            let c = self
                .ca
                .forward(&self.ca_ln.forward(h, ctx)?, cond, cond_bias, ctx)?;
            ctx.residual(h, &c, None)?
        };
        self.block.forward(&h, bias, ctx)
    }
}

/// Sinusoid table `[rows, d]` of Vaswani et al. (2017): `pe[p, 2i] = sin(p w_i)`,
/// `pe[p, 2i+1] = cos(p w_i)`, `w_i = exp(2i * (-ln(10000) / d))`, evaluated in `f64` and
/// rounded once to `f32` (the reference evaluates in `f32` with vectorised, not correctly
/// rounded, exp/sin/cos: its table is ~1e-6 from the exact values; real checkpoints carry
/// their table, which is then used as stored).
///
/// # Shapes
/// Returns `[rows, d]`.
pub fn sinusoid_table(rows: usize, d: usize, device: &Device) -> Result<Tensor> {
    let step = -(10000f64.ln()) / d as f64;
    let w: Vec<f64> = (0..d / 2).map(|i| ((2 * i) as f64 * step).exp()).collect();
    let mut pe = vec![0f32; rows * d];
    for (p, row) in pe.chunks_exact_mut(d).enumerate() {
        for (i, wi) in w.iter().enumerate() {
            let a = p as f64 * wi;
            row[2 * i] = a.sin() as f32;
            row[2 * i + 1] = a.cos() as f32;
        }
    }
    Tensor::from_vec(pe, (rows, d), device)
}

/// Loads a stored `pe` buffer (`[1, rows, d]`) when the builder has one, else computes it.
pub(crate) fn position_table(vb: &VarBuilder, name: &str, rows: usize, d: usize) -> Result<Tensor> {
    if vb.contains_tensor(name) {
        let t = vb.get_unchecked_dtype(name, DType::F32)?;
        let ok = match t.dims() {
            [1, r, dd] => *r > 0 && *dd == d,
            _ => false,
        };
        if !ok {
            candle::bail!(
                "stored position table {name} has shape {:?}, expected [1, rows, {d}]",
                t.dims()
            )
        }
        t.squeeze(0)?.contiguous()
    } else {
        sinusoid_table(rows, d, vb.device())
    }
}

/// Sinusoidal embedding of the noise level followed by an MLP (`time_embedding.*`):
/// `e = [cos(1000 g f), sin(1000 g f)]`, standardised over channels with the unbiased std,
/// then `Linear -> SiLU -> Linear`.
#[derive(Debug, Clone)]
pub(crate) struct TimeEmbedding {
    freqs: Tensor,
    map0: Linear,
    map2: Linear,
}

impl TimeEmbedding {
    /// Its linear layers.
    pub fn linears(&self) -> [&Linear; 2] {
        [&self.map0, &self.map2]
    }

    pub fn new(vb: VarBuilder, dt: usize, d: usize) -> Result<Self> {
        let half = dt / 2;
        let freqs = if vb.contains_tensor("encode_time.freqs") {
            vb.get(half, "encode_time.freqs")?
        } else {
            // (1e-4)^(2i/dt), i = 0..dt/2.
            let f: Vec<f32> = (0..half)
                .map(|i| 1e-4f64.powf(2.0 * i as f64 / dt as f64) as f32)
                .collect();
            Tensor::from_vec(f, half, vb.device())?
        };
        Ok(Self {
            freqs,
            map0: Linear::new(vb.pp("map_time.0"), dt, d)?,
            map2: Linear::new(vb.pp("map_time.2"), d, d)?,
        })
    }

    /// # Shapes
    /// `gamma: [B]` -> `[B, D]`.
    pub fn forward(&self, gamma: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let s = (gamma.to_dtype(DType::F32)? * 1000.0)?;
        let a = s.unsqueeze(1)?.broadcast_mul(&self.freqs.unsqueeze(0)?)?;
        let e = Tensor::cat(&[a.cos()?, a.sin()?], 1)?;
        let n = e.dim(1)?;
        let mean = e.mean_keepdim(1)?;
        let ec = e.broadcast_sub(&mean)?;
        let std = (ec.sqr()?.sum_keepdim(1)? / (n as f64 - 1.0))?.sqrt()?;
        let e = ec.broadcast_div(&std)?;
        let t = candle_nn::ops::silu(&self.map0.forward(&e, ctx)?)?;
        self.map2.forward(&t, ctx)
    }
}
