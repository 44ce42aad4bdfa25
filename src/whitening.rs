//! PCA whitening of pooled text features for training, folded into the condition layer
//! afterwards so that the written model takes raw encoder features.
//!
//! Sentence embeddings of captions that differ in one word are close (all-MiniLM-L6-v2: cosine
//! 0.98 between "a person waves with the right hand" and "... left hand", 0.35 between "walks
//! forward" and "squats"); a condition layer trained on them learns such distinctions slowly.
//! Training on `y' = P y` with `P = V diag(1 / sqrt(lambda + eps * lambda_max)) V^T` (the PCA of
//! the distinct training captions) spreads them as far apart as the caption set allows. `P` is
//! applied without centring, so the all-zero unconditional input of classifier-free guidance
//! stays zero; and a linear layer `W y' + b = (W P) y + b`, so writing `W P` in place of `W`
//! ([`TextWhitening::fold`]) gives a model that takes raw features.

use std::collections::{HashMap, HashSet};

use candle::{DType, Tensor};

use crate::error::{PipelineError, Result};

/// A symmetric `[C, C]` whitening matrix of pooled text features.
#[derive(Debug, Clone, PartialEq)]
pub struct TextWhitening {
    dim: usize,
    /// Row-major `P`.
    p: Vec<f64>,
}

fn bad(reason: String) -> PipelineError {
    PipelineError::Option {
        name: "text whitening".into(),
        reason,
    }
}

impl TextWhitening {
    /// Fits `P` to the distinct rows of `rows` (`[N, dim]` row-major; a caption shared by many
    /// motions counts once), with the eigenvalue floor `eps * lambda_max` (`eps > 0`).
    pub fn fit(rows: &[f32], dim: usize, eps: f64) -> Result<Self> {
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(bad(format!("eps = {eps} must be positive")));
        }
        if dim == 0 || !rows.len().is_multiple_of(dim) {
            return Err(bad(format!(
                "{} values do not make rows of {dim} features",
                rows.len()
            )));
        }
        if let Some(k) = rows.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "non-finite feature at row {}, column {}",
                k / dim,
                k % dim
            )));
        }
        let mut seen = HashSet::new();
        let distinct: Vec<&[f32]> = rows
            .chunks_exact(dim)
            .filter(|r| seen.insert(r.iter().map(|v| v.to_bits()).collect::<Vec<_>>()))
            .collect();
        if distinct.len() < 2 {
            return Err(bad("fewer than 2 distinct rows".into()));
        }
        let n = distinct.len() as f64;
        let mut mean = vec![0f64; dim];
        for r in &distinct {
            for (m, v) in mean.iter_mut().zip(*r) {
                *m += *v as f64 / n;
            }
        }
        let mut cov = nalgebra::DMatrix::<f64>::zeros(dim, dim);
        for r in &distinct {
            let d = nalgebra::DVector::from_iterator(
                dim,
                r.iter().zip(&mean).map(|(v, m)| *v as f64 - m),
            );
            cov.ger(1.0 / (n - 1.0), &d, &d, 1.0);
        }
        let eig = cov.symmetric_eigen();
        let lambda_max = eig.eigenvalues.max();
        if lambda_max.is_nan() || lambda_max <= 0.0 {
            return Err(bad("the rows do not vary".into()));
        }
        let floor = eps * lambda_max;
        let scale = nalgebra::DVector::from_iterator(
            dim,
            eig.eigenvalues
                .iter()
                .map(|l| 1.0 / (l.max(0.0) + floor).sqrt()),
        );
        let v = &eig.eigenvectors;
        let p = v * nalgebra::DMatrix::from_diagonal(&scale) * v.transpose();
        Ok(Self {
            dim,
            p: (0..dim * dim).map(|k| p[(k / dim, k % dim)]).collect(),
        })
    }

    /// Feature width `C`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `y <- P y` for every row of `rows` (`[N, C]` row-major).
    pub fn apply(&self, rows: &mut [f32]) {
        let c = self.dim;
        let mut out = vec![0f32; c];
        for row in rows.chunks_exact_mut(c) {
            for (i, o) in out.iter_mut().enumerate() {
                let pr = &self.p[i * c..(i + 1) * c];
                *o = pr
                    .iter()
                    .zip(row.iter())
                    .map(|(a, b)| a * *b as f64)
                    .sum::<f64>() as f32;
            }
            row.copy_from_slice(&out);
        }
    }

    /// `W <- W P` for the `[D, C]` weight `key` of the layer that takes the features, so the
    /// weights take raw features.
    pub fn fold(&self, weights: &mut HashMap<String, Tensor>, key: &str) -> Result<()> {
        let w = weights
            .get(key)
            .ok_or_else(|| bad(format!("no weight {key} to fold into")))?;
        if w.rank() != 2 || w.dims()[1] != self.dim {
            return Err(bad(format!(
                "{key} has shape {:?}; expected [D, {}]",
                w.dims(),
                self.dim
            )));
        }
        let p: Vec<f32> = self.p.iter().map(|v| *v as f32).collect();
        let p = Tensor::from_vec(p, (self.dim, self.dim), w.device())?;
        let folded = w.to_dtype(DType::F32)?.matmul(&p)?.to_dtype(w.dtype())?;
        weights.insert(key.to_string(), folded);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    type R = std::result::Result<(), Box<dyn std::error::Error>>;

    /// Rows that vary a lot along the first axis and little along the second.
    fn rows() -> Vec<f32> {
        let mut v = Vec::new();
        for i in 0..40 {
            let a = (i as f32 * 0.7).sin();
            let b = (i as f32 * 1.3).cos();
            v.extend_from_slice(&[1.0 + a, 0.01 * b, 0.5]);
        }
        v
    }

    #[test]
    fn whitened_rows_vary_alike_along_every_direction_that_varies() -> R {
        let raw = rows();
        let w = TextWhitening::fit(&raw, 3, 1e-6)?;
        let mut y = raw.clone();
        w.apply(&mut y);
        let var = |k: usize, v: &[f32]| {
            let col: Vec<f64> = v.chunks(3).map(|r| r[k] as f64).collect();
            let m = col.iter().sum::<f64>() / col.len() as f64;
            col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (col.len() - 1) as f64
        };
        // Raw: 10^4 between the axes; whitened: both near 1.
        assert!(var(0, &raw) / var(1, &raw) > 1e3);
        assert!(
            (var(0, &y) - 1.0).abs() < 1e-3 && (var(1, &y) - 1.0).abs() < 1e-2,
            "{} {}",
            var(0, &y),
            var(1, &y)
        );
        // Zero stays zero.
        let mut z = vec![0f32; 3];
        w.apply(&mut z);
        assert_eq!(z, vec![0.0; 3]);
        Ok(())
    }

    #[test]
    fn folding_gives_the_layer_the_raw_features() -> R {
        let raw = rows();
        let w = TextWhitening::fit(&raw, 3, 1e-2)?;
        let dev = Device::Cpu;
        let weight: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut weights = HashMap::from([(
            "proj.weight".to_string(),
            Tensor::from_vec(weight, (4, 3), &dev)?,
        )]);
        let mut whitened = raw.clone();
        w.apply(&mut whitened);
        let x = Tensor::from_vec(raw.clone(), (40, 3), &dev)?;
        let xw = Tensor::from_vec(whitened, (40, 3), &dev)?;
        let before = xw.matmul(&weights["proj.weight"].t()?)?;
        w.fold(&mut weights, "proj.weight")?;
        let after = x.matmul(&weights["proj.weight"].t()?)?;
        let diff = (before - after)?.abs()?.max_all()?;
        assert!(diff.to_scalar::<f32>()? < 1e-3);
        assert!(w.fold(&mut weights, "missing").is_err());
        Ok(())
    }

    #[test]
    fn bad_input_is_named() -> R {
        assert!(TextWhitening::fit(&[1.0, 2.0, 3.0], 2, 0.01).is_err());
        assert!(
            TextWhitening::fit(&[1.0, 2.0, 1.0, 2.0], 2, 0.01).is_err(),
            "one distinct row"
        );
        assert!(TextWhitening::fit(&rows(), 3, 0.0).is_err());
        let e = TextWhitening::fit(&[1.0, f32::NAN, 0.0, 1.0], 2, 0.01)
            .err()
            .ok_or("expected an error")?
            .to_string();
        assert!(e.contains("row 0, column 1"), "{e}");
        Ok(())
    }
}
