"""Hugging Face configuration of kvtrain's KV-lean LLaMA variants (docs/design.md, "The model family" and "Inference and the KV cache").

Written into every non-LLaMA export by `kvtrain export` and loaded with trust_remote_code by
transformers 5.x (docs/export.md). The keys are LlamaConfig's plus four of kvtrain's model section:

  kv_sharing      none | cla | yoco | fusedkv_lite | fusedkv  (cross-layer KV sharing scheme)
  storage_layers  n for yoco / fusedkv_lite / fusedkv (layers 0..n-1 store K/V); 0 = L // 2
  fusion_init     fusedkv's init (normal | lite); informational, weights come from the file
  lrkv_rank       r > 0: LRKV shared + per-head low-rank K/V projections

`kv_sharing_modes` (a property, the hook transformers' cache_utils reads) marks the layers that
only read another layer's K/V as "reuse": a `DynamicCache(config=config)`, which is what
`generate()` makes, then holds a `DummyLayer` for them and stores nothing per token there.
"""

from transformers import PreTrainedConfig

SCHEMES = ("none", "cla", "yoco", "fusedkv_lite", "fusedkv")


class KvtrainConfig(PreTrainedConfig):
    model_type = "kvtrain"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    def __init__(
        self,
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=None,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_parameters=None,
        hidden_act="silu",
        initializer_range=0.02,
        tie_word_embeddings=True,
        use_cache=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        kv_sharing="none",
        storage_layers=0,
        fusion_init="normal",
        lrkv_rank=0,
        attention_bias=False,
        mlp_bias=False,
        **kwargs,
    ):
        if rope_parameters:  # transformers 5.x spelling: {"rope_type": "default", "rope_theta": theta}
            if rope_parameters.get("rope_type", "default") != "default":
                raise ValueError(f"kvtrain models use plain RoPE, got rope_parameters {rope_parameters}")
            rope_theta = rope_parameters.get("rope_theta", rope_theta)
        kwargs.pop("rope_scaling", None)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = float(rope_theta)
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self.kv_sharing = kv_sharing
        self.storage_layers = storage_layers
        self.fusion_init = fusion_init
        self.lrkv_rank = lrkv_rank
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        if kv_sharing not in SCHEMES:
            raise ValueError(f"kv_sharing {kv_sharing!r} is not one of {SCHEMES}")
        if hidden_act != "silu" or attention_bias or mlp_bias:
            raise ValueError("kvtrain models use SiLU (SwiGLU) and no biases")
        if hidden_size % num_attention_heads or num_attention_heads % self.num_key_value_heads:
            raise ValueError("hidden_size must divide by num_attention_heads, and that by num_key_value_heads")
        if lrkv_rank > 0 and (kv_sharing != "none" or self.num_key_value_heads != num_attention_heads):
            raise ValueError("LRKV needs kv_sharing none and num_key_value_heads == num_attention_heads")
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    @property
    def n_storage(self):
        """n of docs/design.md, "The model family" for yoco / fusedkv_lite / fusedkv."""
        return self.storage_layers if self.storage_layers > 0 else self.num_hidden_layers // 2

    def layer_stores_kv(self, i):
        if self.kv_sharing == "none":
            return True
        if self.kv_sharing == "cla":
            return i % 2 == 0
        return i < self.n_storage

    @property
    def kv_sharing_modes(self):
        """Per layer: None (stores its K/V in the cache) or "reuse" (reads a storage layer's)."""
        return [None if self.layer_stores_kv(i) else "reuse" for i in range(self.num_hidden_layers)]
