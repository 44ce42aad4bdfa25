//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019) with
//! PyTorch's update order, global gradient-norm clipping (Pascanu et al., "On the difficulty of
//! training recurrent neural networks", 2013) and the warm-up + cosine learning-rate curve
//! (Loshchilov & Hutter, "SGDR", 2017; the form of `transformers`'
//! `get_cosine_schedule_with_warmup`).
//!
//! `candle_nn::AdamW` computes the same update up to rounding (decoupled decay
//! `p (1 - lr wd)`, bias-corrected moments, `eps` added to `sqrt(v_hat)`) but keeps its moments
//! private, so they could not be checkpointed; [`AdamW`] exposes them and follows PyTorch's
//! `_single_tensor_adam` operation order.

use candle::backprop::GradStore;
use candle::{DType, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to `sqrt(v_hat)`.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// The reference's settings: lr 1e-4, betas (0.9, 0.95), eps 1e-7, weight decay 0.1.
    pub fn reference() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-7,
            weight_decay: 0.1,
        }
    }
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self::reference()
    }
}

/// The trainable variables of a `VarMap`, sorted by name (a stable order for checkpoints).
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(_, var)| var.dtype().is_float())
        .map(|(k, var)| (k.clone(), var.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// One parameter's optimiser state.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// AdamW over the variables of a `VarMap`, with inspectable (checkpointable) moments.
///
/// Update at step `t` (PyTorch order, `f32` tensors, scalars rounded to `f32`):
/// `p *= 1 - lr wd; m = lerp(m, g, 1 - b1); v = v b2 + (1 - b2) g g;
/// p += (-lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use candle_nn::{Init, VarMap};
/// use diffusion::{AdamW, AdamWConfig};
/// let vm = VarMap::new();
/// let w = vm.get(2, "w", Init::Const(1.0), DType::F32, &Device::Cpu)?;
/// let mut opt = AdamW::new(&vm, AdamWConfig::reference())?;
/// let grads = (w.sum_all()?).backward()?;
/// opt.step(&grads, 1e-4)?;
/// // First step: p (1 - lr wd) - lr * sign(g) (up to eps).
/// let p = w.to_vec1::<f32>()?[0];
/// assert!((p - (1.0 - 1e-5 - 1e-4)).abs() < 1e-7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl AdamW {
    /// Zero moments for every floating-point variable of `varmap`.
    pub fn new(varmap: &VarMap, config: AdamWConfig) -> Result<Self> {
        let slots = named_vars(varmap)
            .into_iter()
            .map(|(name, var)| {
                let m = var.as_tensor().zeros_like()?;
                let v = var.as_tensor().zeros_like()?;
                Ok(Slot { name, var, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            slots,
            step: 0,
        })
    }

    /// The hyper-parameters (`lr` is the peak; [`AdamW::step`] takes the current one).
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Number of updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Parameter names with their first and second moments, in name order.
    pub fn moments(&self) -> impl Iterator<Item = (&str, &Tensor, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.m, &s.v))
    }

    /// Replaces the state (used when resuming): the step count and every parameter's moments.
    /// `moments(name)` must return `(m, v)` of the parameter's shape.
    pub fn restore(
        &mut self,
        step: u64,
        mut moments: impl FnMut(&str, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<()> {
        for s in &mut self.slots {
            let (m, v) = moments(&s.name, s.var.as_tensor())?;
            s.m = m;
            s.v = v;
        }
        self.step = step;
        Ok(())
    }

    /// Applies one update with learning rate `lr`. Every parameter must have a gradient in
    /// `grads` ([`DiffusionError::MissingGradient`] otherwise, naming it).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let c = self.config;
        self.step += 1;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let step_size = lr / bias1;
        let bias2_sqrt = bias2.sqrt();
        for s in &mut self.slots {
            let p = s.var.as_tensor();
            let g = grads
                .get(p)
                .ok_or_else(|| DiffusionError::MissingGradient {
                    name: s.name.clone(),
                })?
                .to_dtype(p.dtype())?;
            if kernels::ops::fast_ok(p) && g.dtype() == DType::F32 && p.is_contiguous() {
                // One fused pass for the moments, one for the parameter (in place, as
                // `Var::set` writes it); bit-identical to the tensor ops below.
                let (m, v) = kernels::optim::adamw_step(
                    p,
                    &g,
                    &s.m,
                    &s.v,
                    kernels::optim::AdamWStep {
                        decay: 1.0 - lr * c.weight_decay,
                        one_minus_beta1: 1.0 - c.beta1,
                        beta2: c.beta2,
                        one_minus_beta2: 1.0 - c.beta2,
                        bias2_sqrt,
                        eps: c.eps,
                        neg_step_size: -step_size,
                    },
                )?;
                s.m = m;
                s.v = v;
                continue;
            }
            let p = (p * (1.0 - lr * c.weight_decay))?;
            // lerp(m, g, w) for w < 0.5 is m + w (g - m), as torch.lerp.
            let m = (&s.m + ((&g - &s.m)? * (1.0 - c.beta1))?)?;
            // addcmul: v b2 + ((1 - b2) g) g.
            let v = ((&s.v * c.beta2)? + ((&g * (1.0 - c.beta2))? * &g)?)?;
            let denom = scalar_div(&v.sqrt()?, bias2_sqrt)?.affine(1.0, c.eps)?;
            // addcdiv: p + ((-step_size) m) / denom.
            let p = (p + ((&m * -step_size)? / denom)?)?;
            s.var.set(&p)?;
            s.m = m;
            s.v = v;
        }
        Ok(())
    }
}

/// `t / s` as a true division by the `t`-typed scalar (PyTorch divides by the rounded scalar).
fn scalar_div(t: &Tensor, s: f64) -> candle::Result<Tensor> {
    let s = Tensor::new(s, t.device())?.to_dtype(t.dtype())?;
    t.broadcast_div(&s)
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`, as PyTorch's
/// `clip_grad_norm_`: `coef = min(1, max_norm / (norm + 1e-6))`. Returns the norm before
/// clipping. Variables without a gradient are skipped here.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for (_, v) in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    if coef < 1.0 {
        for (_, v) in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * coef)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// Linear warm-up then cosine decay: `lr(s) = peak * s / warmup` for `s < warmup`, then
/// `peak * (min_ratio + (1 - min_ratio) * 0.5 (1 + cos(pi p)))`, `p = (s - warmup) /
/// max(1, total - warmup)` clamped to `[0, 1]` (`transformers`' `get_cosine_schedule_with_warmup`
/// when `min_ratio = 0`). `s` is the number of updates already applied.
///
/// ```
/// use diffusion::WarmupCosine;
/// let s = WarmupCosine::reference(1e-4, 100_000);
/// assert_eq!(s.lr(0), 0.0);
/// assert_eq!(s.lr(2500), 0.5e-4);
/// assert_eq!(s.lr(5000), 1e-4);
/// assert!(s.lr(100_000) < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub peak: f64,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Total steps (end of the cosine).
    pub total_steps: u64,
    /// Final learning rate as a fraction of the peak.
    pub min_ratio: f64,
}

impl WarmupCosine {
    /// The reference's curve: 5000 warm-up steps, cosine to 0 at `total_steps`.
    pub fn reference(peak: f64, total_steps: u64) -> Self {
        Self {
            peak,
            warmup_steps: 5000,
            total_steps,
            min_ratio: 0.0,
        }
    }

    /// The learning rate for the update that follows `step` applied updates.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let p = ((step - self.warmup_steps) as f64 / span).clamp(0.0, 1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
        self.peak * (self.min_ratio + (1.0 - self.min_ratio) * cos)
    }
}

/// The optional decay warm-up of the `ema_pytorch` package (used by the reference's training
/// code through `ema_pytorch.EMA`): for the update after `n` calls, with
/// `e = n - update_after_step - 1`, the weights are copied while `n <= update_after_step`, and
/// otherwise `decay = min(beta, 1 - (1 + e / inv_gamma)^-power)` (0 when `e <= 0`).
/// `ema_pytorch`'s defaults are `update_after_step = 100`, `inv_gamma = 1`, `power = 2/3`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmaWarmup {
    /// Updates before averaging starts (the EMA copies the weights until then).
    pub update_after_step: u64,
    /// Warm-up time scale.
    pub inv_gamma: f64,
    /// Warm-up exponent.
    pub power: f64,
}

impl EmaWarmup {
    /// `ema_pytorch`'s defaults: 100, 1, 2/3.
    pub fn ema_pytorch_defaults() -> Self {
        Self {
            update_after_step: 100,
            inv_gamma: 1.0,
            power: 2.0 / 3.0,
        }
    }
}

/// Exponential moving average of the weights (Polyak & Juditsky 1992; as `ema_pytorch` with
/// `update_every = 1`): `ema = lerp(ema, p, 1 - beta)` after every optimiser step, with a
/// constant `beta` (the default, as the issue specifies) or the optional [`EmaWarmup`].
#[derive(Debug, Clone)]
pub struct Ema {
    beta: f64,
    warmup: Option<EmaWarmup>,
    updates: u64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts the average at the current weights of `vars`, constant decay `beta`.
    pub fn new(vars: &[(String, Var)], beta: f64) -> Result<Self> {
        let shadow = vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            beta,
            warmup: None,
            updates: 0,
            shadow,
        })
    }

    /// Uses the `ema_pytorch` decay warm-up.
    pub fn with_warmup(mut self, warmup: Option<EmaWarmup>) -> Self {
        self.warmup = warmup;
        self
    }

    /// The decay `beta` (the cap of the warm-up).
    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// Number of updates applied.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay the next update uses (`None`: it copies the weights).
    pub fn next_decay(&self) -> Option<f64> {
        let n = self.updates + 1;
        match self.warmup {
            None => Some(self.beta),
            Some(w) if n <= w.update_after_step => None,
            Some(w) => {
                let e = n as f64 - w.update_after_step as f64 - 1.0;
                if e <= 0.0 {
                    return Some(0.0);
                }
                Some((1.0 - (1.0 + e / w.inv_gamma).powf(-w.power)).clamp(0.0, self.beta))
            }
        }
    }

    /// `ema += (1 - decay) (p - ema)` for every parameter (torch's `lerp_` for weights < 0.5;
    /// `ema + w (p - ema)` is used for every weight, `decay` from [`Ema::next_decay`]).
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        let decay = self.next_decay();
        self.updates += 1;
        for ((name, e), (vname, v)) in self.shadow.iter_mut().zip(vars) {
            debug_assert_eq!(name, vname);
            let p = v.as_tensor().detach();
            *e = match decay {
                None => p.copy()?,
                Some(d) => (&*e + ((p - &*e)? * (1.0 - d))?)?,
            };
        }
        Ok(())
    }

    /// The averaged weights by parameter name.
    pub fn weights(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.shadow.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Replaces every averaged tensor and the update count (when resuming).
    pub fn restore(
        &mut self,
        updates: u64,
        mut f: impl FnMut(&str, &Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        for (n, t) in &mut self.shadow {
            *t = f(n, t)?;
        }
        self.updates = updates;
        Ok(())
    }
    /// Copies the averaged weights into `varmap` (e.g. a second model used for sampling).
    pub fn copy_into(&self, varmap: &VarMap) -> Result<()> {
        let data = varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (n, t) in &self.shadow {
            let var = data
                .get(n)
                .ok_or_else(|| DiffusionError::UnknownParameter { name: n.clone() })?;
            var.set(t)?;
        }
        Ok(())
    }
}
