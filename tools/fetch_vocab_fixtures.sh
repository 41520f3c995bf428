#!/usr/bin/env bash
# fetch_vocab_fixtures.sh DIR — llama.cpp's vocab-only GGUF files and their test pairs, from the
# llama-cpp-python sdist on PyPI (pinned), for the byte-level BPE check (tests/tools/bpe_vocab_check).
# Each ggml-vocab-X.gguf has X.gguf.inp (texts separated by "\n__ggml_vocab_test__\n") and
# X.gguf.out (one line of ids per text, made by Hugging Face's tokenizers). Skips what DIR holds.
set -euo pipefail
DIR=${1:?usage: fetch_vocab_fixtures.sh DIR}
VERSION=0.3.36
VOCABS="gpt-2 llama-bpe qwen2 starcoder refact"
mkdir -p "$DIR"
have=1
for v in $VOCABS; do
  [[ -s "$DIR/ggml-vocab-$v.gguf.out" ]] || have=0
done
[[ $have == 1 ]] && exit 0
tmp=$(mktemp -d "$DIR/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
PIP_ROOT_USER_ACTION=ignore python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" \
  "llama-cpp-python==$VERSION"
members=()
for v in $VOCABS; do
  for ext in "" .inp .out; do
    members+=("llama_cpp_python-$VERSION/vendor/llama.cpp/models/ggml-vocab-$v.gguf$ext")
  done
done
tar -xzf "$tmp/llama_cpp_python-$VERSION.tar.gz" -C "$tmp" "${members[@]}"
mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp/models/"* "$DIR/"
