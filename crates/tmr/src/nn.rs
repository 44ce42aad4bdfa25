//! Pieces shared by the text transformers ([`crate::clip`], [`crate::bert`]): affine
//! parameters read from a state dict and the packing of token sequences.

use candle::{Result, Tensor};
use candle_nn::VarBuilder;
use kernels::ops;

/// `(weight, bias)` of a LayerNorm or a linear layer.
#[derive(Debug, Clone)]
pub(crate) struct Affine {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
}

impl Affine {
    /// A LayerNorm's `weight` and `bias`, both `[d]`.
    pub(crate) fn norm(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(d, "weight")?,
            bias: vb.get(d, "bias")?,
        })
    }

    /// A linear layer's `weight [d_out, d_in]` and `bias [d_out]`.
    pub(crate) fn linear(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((d_out, d_in), "weight")?,
            bias: vb.get(d_out, "bias")?,
        })
    }

    /// LayerNorm over the last dim with these parameters (inference kernel).
    pub(crate) fn layer_norm(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        ops::layer_norm(x, Some((&self.weight, &self.bias)), eps, true)
    }
}

/// Flattens token sequences for a packed forward: `(ids, positions, offsets)` with positions
/// counting from 0 in every sequence and `S + 1` cumulative offsets. Every sequence must hold
/// 1 to `context` tokens below `vocab`; `what` names the model in errors.
pub(crate) fn pack_ids(
    ids: &[Vec<u32>],
    vocab: usize,
    context: usize,
    what: &str,
) -> Result<(Vec<u32>, Vec<u32>, Vec<usize>)> {
    let mut offsets = Vec::with_capacity(ids.len() + 1);
    offsets.push(0);
    let mut flat = Vec::new();
    let mut positions = Vec::new();
    for (i, row) in ids.iter().enumerate() {
        if row.is_empty() || row.len() > context {
            candle::bail!(
                "{what}: sequence {i} has {} tokens, expected 1 to {context}",
                row.len()
            )
        }
        if let Some(&bad) = row.iter().find(|&&t| t as usize >= vocab) {
            candle::bail!("{what}: sequence {i} has token id {bad} >= vocabulary {vocab}")
        }
        flat.extend_from_slice(row);
        positions.extend(0..row.len() as u32);
        offsets.push(flat.len());
    }
    Ok((flat, positions, offsets))
}
