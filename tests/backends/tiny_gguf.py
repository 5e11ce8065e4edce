"""Write a tiny llama-architecture GGUF model with random weights (no download, ~1 MB).

It is a real model to llama.cpp: two transformer blocks, a SentencePiece-style vocabulary of
control tokens, the 256 byte-fallback tokens and a few dozen word pieces, and a ChatML chat
template, so a llama.cpp server loads it and generates real tokens (gibberish words), and mean
pooling, so it serves one embedding per text. The rows
of the output matrix for control and byte tokens are zero and those of the word pieces large,
so greedy sampling picks word pieces: the text is printable and never ends early on EOS.
"""

from __future__ import annotations

from pathlib import Path

WORDS = [
    "the", "a", "grid", "job", "token", "model", "worker", "stream", "fast", "slow", "red",
    "blue", "green", "cat", "dog", "runs", "jumps", "over", "under", "and", "or", "not", "yes",
    "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
]  # fmt: skip
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_llama(path: Path, *, n_embd: int = 64, n_layer: int = 2, seed: int = 0) -> Path:
    """Write the model to `path` and return it."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>".encode() for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = [f"\u2581{w}" for w in WORDS] + list("abcdefghijklmnopqrstuvwxyz")
    tokens += [p.encode() for p in pieces]
    types += [gguf.TokenType.NORMAL] * len(pieces)
    n_vocab, n_head, n_ff = len(tokens), 4, 2 * n_embd
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("jetgrid-tiny")
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_pooling_type(gguf.PoolingType.MEAN)  # one vector per text when serving embeddings
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML)

    def t(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w.add_tensor("token_embd.weight", t(n_vocab, n_embd))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", t(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    out = np.zeros((n_vocab, n_embd), dtype=np.float32)
    out[259:] = t(len(pieces), n_embd, scale=10.0)
    w.add_tensor("output.weight", out)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


if __name__ == "__main__":  # run by the engine's own Python, where gguf is installed
    import sys

    write_tiny_llama(Path(sys.argv[1]))
