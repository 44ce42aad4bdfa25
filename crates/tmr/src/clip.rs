//! The CLIP text transformer (Radford et al., "Learning Transferable Visual Models From Natural
//! Language Supervision", 2021) on the fused kernels of [`kernels`], run on packed token rows.
//!
//! Architecture (Hugging Face `CLIPTextTransformer`, OpenAI weights): token + learned position
//! embeddings; `num_hidden_layers` pre-norm layers `x += out_proj(attn(LN1(x)))` with a causal
//! mask, `x += fc2(quick_gelu(fc1(LN2(x))))`; a final LayerNorm (eps 1e-5 throughout).
//!
//! Captions are not padded: the token rows of all captions are packed one after the other and
//! every caption attends (causally) to its own rows only, so a batch costs the sum of its
//! caption lengths, not `B x` the longest. Padding after the end-of-text token cannot change
//! any earlier position under the causal mask, so the result equals the padded computation.

use candle::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use kernels::ops::{self, Activation};

use crate::nn::{Affine, pack_ids};
use crate::text::ClipTextSizes;

/// LayerNorm epsilon of OpenAI CLIP.
const EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
struct Layer {
    norm1: Affine,
    /// `q_proj | k_proj | v_proj` stacked: `[3 C, C]`, `[3 C]`.
    qkv: Affine,
    out_proj: Affine,
    norm2: Affine,
    fc1: Affine,
    fc2: Affine,
}

impl Layer {
    fn new(c: usize, ff: usize, vb: VarBuilder) -> Result<Self> {
        let attn = vb.pp("self_attn");
        let proj = |name: &str| Affine::linear(c, c, attn.pp(name));
        let (q, k, v) = (proj("q_proj")?, proj("k_proj")?, proj("v_proj")?);
        Ok(Self {
            norm1: Affine::norm(c, vb.pp("layer_norm1"))?,
            qkv: Affine {
                weight: Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?,
                bias: Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0)?,
            },
            out_proj: proj("out_proj")?,
            norm2: Affine::norm(c, vb.pp("layer_norm2"))?,
            fc1: Affine::linear(c, ff, vb.pp("mlp").pp("fc1"))?,
            fc2: Affine::linear(ff, c, vb.pp("mlp").pp("fc2"))?,
        })
    }

    /// `x: [N, C]` packed rows of the sequences `offsets` delimits.
    fn forward(&self, x: &Tensor, heads: usize, offsets: &[usize]) -> Result<Tensor> {
        let c = x.dim(1)?;
        let h = self.norm1.layer_norm(x, EPS)?;
        let qkv = ops::linear(&h, &self.qkv.weight, &self.qkv.bias, false, true)?;
        let attn = ops::packed_attention(
            &qkv.narrow(1, 0, c)?,
            &qkv.narrow(1, c, c)?,
            &qkv.narrow(1, 2 * c, c)?,
            heads,
            offsets,
            offsets,
            true,
        )?;
        let (ow, ob) = (&self.out_proj.weight, &self.out_proj.bias);
        let x = ops::linear_residual(&attn, ow, ob, x, true)?;
        let h = self.norm2.layer_norm(&x, EPS)?;
        let f = ops::linear_act(
            &h,
            &self.fc1.weight,
            &self.fc1.bias,
            Activation::QuickGelu,
            true,
        )?;
        ops::linear_residual(&f, &self.fc2.weight, &self.fc2.bias, &x, true)
    }
}

/// CLIP's text transformer (no projection head): token ids -> final-LayerNorm hidden states.
#[derive(Debug, Clone)]
pub struct ClipTextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_norm: Affine,
    heads: usize,
}

impl ClipTextTransformer {
    /// Builds the transformer of `sizes` from a [`VarBuilder`] at the `text_model.` level of a
    /// Hugging Face CLIP state dict (`embeddings.*`, `encoder.layers.N.*`, `final_layer_norm.*`).
    pub fn new(sizes: &ClipTextSizes, vb: VarBuilder) -> Result<Self> {
        let (vocab, width, ff) = (sizes.vocab_size, sizes.hidden_size, sizes.intermediate_size);
        let (layers, heads, context) = (
            sizes.num_hidden_layers,
            sizes.num_attention_heads,
            sizes.max_position_embeddings,
        );
        if heads == 0 || !width.is_multiple_of(heads) {
            candle::bail!("CLIP text: width {width} is not divisible by {heads} heads")
        }
        let emb = vb.pp("embeddings");
        Ok(Self {
            token_embedding: emb.get((vocab, width), "token_embedding.weight")?,
            position_embedding: emb.get((context, width), "position_embedding.weight")?,
            layers: (0..layers)
                .map(|n| Layer::new(width, ff, vb.pp(format!("encoder.layers.{n}"))))
                .collect::<Result<_>>()?,
            final_norm: Affine::norm(width, vb.pp("final_layer_norm"))?,
            heads,
        })
    }

    /// Hidden states of token sequences packed row after row.
    ///
    /// # Shapes
    /// `ids`: `S` non-empty sequences of at most the context length, ids below the vocabulary
    /// size -> `([N, C], offsets)` with `N` the total token count and `S + 1` cumulative offsets
    /// (sequence `i` owns rows `offsets[i]..offsets[i + 1]`).
    pub fn forward_packed(&self, ids: &[Vec<u32>]) -> Result<(Tensor, Vec<usize>)> {
        let (vocab, _) = self.token_embedding.dims2()?;
        let (context, _) = self.position_embedding.dims2()?;
        let (flat, positions, offsets) = pack_ids(ids, vocab, context, "CLIP text")?;
        let device = self.token_embedding.device();
        let n = flat.len();
        if n == 0 {
            let width = self.token_embedding.dim(1)?;
            return Ok((Tensor::zeros((0, width), self.dtype(), device)?, offsets));
        }
        let tok = Tensor::from_vec(flat, n, device)?;
        let pos = Tensor::from_vec(positions, n, device)?;
        let mut x = (self.token_embedding.index_select(&tok, 0)?
            + self.position_embedding.index_select(&pos, 0)?)?;
        for layer in &self.layers {
            x = layer.forward(&x, self.heads, &offsets)?;
        }
        Ok((self.final_norm.layer_norm(&x, EPS)?, offsets))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.token_embedding.device()
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.token_embedding.dtype()
    }
}
