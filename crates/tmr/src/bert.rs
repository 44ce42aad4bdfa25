//! The BERT encoder (Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for
//! Language Understanding", 2019) of sentence-transformers models such as all-MiniLM-L6-v2, on
//! the fused kernels of [`kernels`], run on packed token rows.
//!
//! Architecture (Hugging Face `BertModel`): word + absolute position + token-type (type 0)
//! embeddings and a LayerNorm; `num_hidden_layers` post-norm layers
//! `x = LN(x + out(attn(x)))`, `x = LN(x + W2 act(W1 x))`. Sentences are not padded: their rows
//! are packed one after the other and each attends to its own rows only, which is exactly
//! the padded computation with a key mask, without the padded work.

use candle::{Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use kernels::ops::{self, Activation};

use crate::nn::{Affine, pack_ids};

#[derive(Debug, Clone)]
struct Layer {
    /// `query | key | value` stacked: `[3 H, H]`, `[3 H]`.
    qkv: Affine,
    attn_out: Affine,
    attn_norm: Affine,
    intermediate: Affine,
    output: Affine,
    output_norm: Affine,
}

impl Layer {
    fn new(h: usize, ff: usize, vb: VarBuilder) -> Result<Self> {
        let sa = vb.pp("attention").pp("self");
        let (q, k, v) = (
            Affine::linear(h, h, sa.pp("query"))?,
            Affine::linear(h, h, sa.pp("key"))?,
            Affine::linear(h, h, sa.pp("value"))?,
        );
        let ao = vb.pp("attention").pp("output");
        Ok(Self {
            qkv: Affine {
                weight: Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?,
                bias: Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0)?,
            },
            attn_out: Affine::linear(h, h, ao.pp("dense"))?,
            attn_norm: Affine::norm(h, ao.pp("LayerNorm"))?,
            intermediate: Affine::linear(h, ff, vb.pp("intermediate").pp("dense"))?,
            output: Affine::linear(ff, h, vb.pp("output").pp("dense"))?,
            output_norm: Affine::norm(h, vb.pp("output").pp("LayerNorm"))?,
        })
    }
}

/// A BERT encoder: token ids -> last hidden states.
#[derive(Debug, Clone)]
pub struct BertTransformer {
    word: Tensor,
    position: Tensor,
    /// The type-0 token-type embedding row `[H]` (single-segment inputs).
    token_type: Tensor,
    embed_norm: Affine,
    layers: Vec<Layer>,
    heads: usize,
    act: HiddenAct,
    eps: f64,
}

impl BertTransformer {
    /// Builds the encoder from a Hugging Face `config.json` (as candle-transformers' [`Config`])
    /// and a [`VarBuilder`] at the root of the state dict: `embeddings.*` / `encoder.layer.N.*`,
    /// possibly under a `bert.` or `<model_type>.` prefix.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (h, heads) = (cfg.hidden_size, cfg.num_attention_heads);
        if heads == 0 || !h.is_multiple_of(heads) {
            candle::bail!("BERT: hidden_size {h} is not divisible by {heads} attention heads")
        }
        if cfg.type_vocab_size == 0 {
            candle::bail!("BERT: type_vocab_size is 0")
        }
        let key = "embeddings.word_embeddings.weight";
        let mut prefixes = vec!["bert".to_string()];
        prefixes.extend(cfg.model_type.clone());
        let vb = match prefixes
            .iter()
            .find(|p| !vb.contains_tensor(key) && vb.contains_tensor(&format!("{p}.{key}")))
        {
            Some(p) => vb.pp(p),
            None => vb,
        };
        let emb = vb.pp("embeddings");
        Ok(Self {
            word: emb.get((cfg.vocab_size, h), "word_embeddings.weight")?,
            position: emb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            token_type: emb
                .get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?
                .get(0)?,
            embed_norm: Affine::norm(h, emb.pp("LayerNorm"))?,
            layers: (0..cfg.num_hidden_layers)
                .map(|n| {
                    Layer::new(
                        h,
                        cfg.intermediate_size,
                        vb.pp(format!("encoder.layer.{n}")),
                    )
                })
                .collect::<Result<_>>()?,
            heads,
            act: cfg.hidden_act,
            eps: cfg.layer_norm_eps,
        })
    }

    /// `act(x W^T + b)` for the feed-forward: exact GELU fused into the product, the other
    /// activations applied after it.
    fn intermediate(&self, x: &Tensor, p: &Affine) -> Result<Tensor> {
        match self.act {
            HiddenAct::Gelu => ops::linear_act(x, &p.weight, &p.bias, Activation::GeluErf, true),
            HiddenAct::GeluApproximate => {
                ops::linear_act(x, &p.weight, &p.bias, Activation::Identity, true)?.gelu()
            }
            HiddenAct::Relu => {
                ops::linear_act(x, &p.weight, &p.bias, Activation::Identity, true)?.relu()
            }
        }
    }

    /// Hidden states of token sequences packed row after row.
    ///
    /// # Shapes
    /// `ids`: `S` non-empty sequences of at most `max_position_embeddings` tokens, ids below
    /// the vocabulary size -> `([N, H], offsets)` with `N` the total token count and `S + 1`
    /// cumulative offsets (sequence `i` owns rows `offsets[i]..offsets[i + 1]`).
    pub fn forward_packed(&self, ids: &[Vec<u32>]) -> Result<(Tensor, Vec<usize>)> {
        let (vocab, h) = self.word.dims2()?;
        let (context, _) = self.position.dims2()?;
        let (flat, positions, offsets) = pack_ids(ids, vocab, context, "BERT")?;
        let device = self.word.device();
        let n = flat.len();
        if n == 0 {
            return Ok((Tensor::zeros((0, h), self.word.dtype(), device)?, offsets));
        }
        let tok = Tensor::from_vec(flat, n, device)?;
        let pos = Tensor::from_vec(positions, n, device)?;
        let x = (self.word.index_select(&tok, 0)? + self.position.index_select(&pos, 0)?)?
            .broadcast_add(&self.token_type)?;
        let mut x = self.embed_norm.layer_norm(&x, self.eps)?;
        for layer in &self.layers {
            let qkv = ops::linear(&x, &layer.qkv.weight, &layer.qkv.bias, false, true)?;
            let attn = ops::packed_attention(
                &qkv.narrow(1, 0, h)?,
                &qkv.narrow(1, h, h)?,
                &qkv.narrow(1, 2 * h, h)?,
                self.heads,
                &offsets,
                &offsets,
                false,
            )?;
            let (w, b) = (&layer.attn_out.weight, &layer.attn_out.bias);
            x = layer
                .attn_norm
                .layer_norm(&ops::linear_residual(&attn, w, b, &x, true)?, self.eps)?;
            let f = self.intermediate(&x, &layer.intermediate)?;
            let (w, b) = (&layer.output.weight, &layer.output.bias);
            x = layer
                .output_norm
                .layer_norm(&ops::linear_residual(&f, w, b, &x, true)?, self.eps)?;
        }
        Ok((x, offsets))
    }
}
