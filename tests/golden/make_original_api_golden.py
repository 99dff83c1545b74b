"""Writes the original's answers to its own Python API, for tests/test_porting.py (run once, by hand).

Not part of the project or its tests: it runs the ORIGINAL code (bert-tensorflow 1.0.4, see
tests/golden/original.py) on small inputs, calling its functions as a program written against it
would, and records what they return:

  original_api_golden.json  token-level answers: masking, instances, example conversions
  original_api_golden.npz   tensor answers: modeling helpers, the pretraining heads, one optimizer

    .venv/bin/python tests/golden/make_original_api_golden.py --original_dir=/tmp/orig
"""

import argparse
import ast
import collections
import csv
import json
import os
import random
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from tests.golden import original
from tests.golden.original import v1

VOCAB_FILE = os.path.join(HERE, "extract_tiny_vocab.txt")
MASKING_TOKENS = ["[CLS]", "the", "quick", "jack", "##son", "##ville", "is", "a", "dog", "[SEP]", "un", "##want",
                  "##ed", "run", "##n", "##ing", "[SEP]"]
DOCUMENTS = [
    [["the", "quick", "brown", "fox"], ["jump", "##s", "over", "the", "lazy", "dog", "."], ["hello", "world"]],
    [["is", "this", "jack", "##son", "##ville", "?"], ["no", ",", "it", "is", "not", "."]],
    [["a", "b", "c"], ["d", "e", "f", "g"], ["good", "day", "and", "good", "night"], ["cafe", "!"]],
]
EXTRACT_LINES = ["The quick brown fox jumps over the lazy dog.", "", "Is this Jacksonville? ||| No, it is not.",
                 "a ||| b ||| c", "  hello world  ", "run ||| "]
CLASSIFIER_ROWS = [["label", "a", "b"], ["1", "The quick brown fox jumps over the lazy dog.", "Hello world!"],
                   ["0", "unwanted running", ""], ["1", '"quoted" text', "a b c d e f g a b c d e f g"],
                   ["0", "a line\u2028separator", "next\x85line"]]  # one row each: lines end at \n only
# Tiny pretraining heads: H=8, V=13, B=2, S=5, P=3.
HEAD_CONFIG = dict(vocab_size=13, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                   hidden_act="gelu", initializer_range=0.02)


def load_pure(original_dir, filename, **namespace):
    """Executes an original script without its flag definitions, imports of bert/TF and main."""
    source_path = original.path(original_dir, filename)
    tree = ast.parse(open(source_path, encoding="utf-8").read(), source_path)

    def keep(node):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names]
            module = getattr(node, "module", None) or ""
            return not (module.startswith(("bert", "tensorflow")) or any(n.startswith("tensorflow") for n in names))
        if isinstance(node, ast.Expr) and "flags.DEFINE" in ast.unparse(node):
            return False
        return not (isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))

    tree.body = [node for node in tree.body if keep(node)]
    from absl import flags
    scope = dict(tf=v1, flags=flags, __name__="original_" + filename[:-3], **namespace)
    exec(compile(tree, source_path, "exec"), scope)
    return types_namespace(scope)


def types_namespace(scope):
    import types
    return types.SimpleNamespace(**scope)


def pretraining_data_answers(original_dir, tokenization):
    cpd = load_pure(original_dir, "create_pretraining_data.py", tokenization=tokenization)
    vocab_words = list(tokenization.load_vocab(VOCAB_FILE).keys())
    masking = []
    for seed in range(6):
        output, positions, labels = cpd.create_masked_lm_predictions(
            list(MASKING_TOKENS), 0.25, 3 + seed % 3, vocab_words, random.Random(seed))
        masking.append({"seed": seed, "max_predictions": 3 + seed % 3, "output": output, "positions": positions,
                        "labels": labels})
    rng = random.Random(7)
    instances = []
    for index in range(len(DOCUMENTS)):
        instances.append([str(instance) for instance in cpd.create_instances_from_document(
            DOCUMENTS, index, 16, 0.3, 0.2, 4, vocab_words, rng)])
    return {"masking": masking, "instances": instances}


def extract_features_answers(original_dir, tokenization):
    ef = load_pure(original_dir, "extract_features.py", tokenization=tokenization)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(EXTRACT_LINES) + "\n")
    examples = ef.read_examples(f.name)
    os.remove(f.name)
    tokenizer = tokenization.FullTokenizer(VOCAB_FILE, do_lower_case=True)
    features = ef.convert_examples_to_features(examples, 12, tokenizer)
    return {"examples": [[e.unique_id, e.text_a, e.text_b] for e in examples],
            "features": [[f.unique_id, f.tokens, f.input_ids, f.input_mask, f.input_type_ids] for f in features]}


def classifier_answers(original_dir, tokenization):
    rc = load_pure(original_dir, "run_classifier.py", tokenization=tokenization, modeling=None, optimization=None)
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False, encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, quotechar=None)
        writer.writerows(CLASSIFIER_ROWS)
    rows = rc.DataProcessor._read_tsv(f.name)
    os.remove(f.name)
    examples = [rc.InputExample(guid=f"train-{i}", text_a=row[1], text_b=row[2] or None, label=row[0])
                for i, row in enumerate(rows[1:])] + [rc.PaddingInputExample()]
    tokenizer = tokenization.FullTokenizer(VOCAB_FILE, do_lower_case=True)
    features = rc.convert_examples_to_features(examples, ["0", "1"], 10, tokenizer)
    return {"rows": rows, "features": [[f.input_ids, f.input_mask, f.segment_ids, f.label_id, f.is_real_example]
                                       for f in features]}


def run_graph(build):
    """Builds with `build()` in a fresh TF1 graph, initialises, returns the session's run of its outputs."""
    with v1.Graph().as_default(), v1.Session() as session:
        outputs, feeds = build()
        session.run(v1.global_variables_initializer())
        for name, value in feeds.items():
            variable = [v for v in v1.global_variables() if v.op.name == name][0]
            variable.load(value, session)
        return session.run(outputs)


def modeling_answers(original_dir, arrays):
    shim = original.tf1_namespace()
    modeling = original.modeling(original_dir, shim)
    rng = np.random.RandomState(23)
    arrays["gelu_x"] = np.linspace(-6, 6, 41).astype(np.float32)
    arrays["layer_norm_x"] = rng.normal(size=(2, 3, 8)).astype(np.float32) * 3 + 1
    arrays["from_tensor"] = rng.normal(size=(2, 3, 4)).astype(np.float32)
    arrays["to_mask"] = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], np.int32)

    def build():
        outputs = {
            "gelu_y": modeling.gelu(v1.constant(arrays["gelu_x"])),
            "layer_norm_y": modeling.layer_norm(v1.constant(arrays["layer_norm_x"])),
            "layer_norm_and_dropout_y": modeling.layer_norm_and_dropout(v1.constant(arrays["layer_norm_x"]), 0.0),
            "attention_mask": modeling.create_attention_mask_from_input_mask(
                v1.constant(arrays["from_tensor"]), v1.constant(arrays["to_mask"])),
            "matrix": modeling.reshape_to_matrix(v1.constant(arrays["layer_norm_x"])),
        }
        outputs["from_matrix"] = modeling.reshape_from_matrix(outputs["matrix"], [2, 3, 8])
        return outputs, {}

    arrays.update(run_graph(build))
    return {"get_activation": {name: getattr(modeling.get_activation(name), "__name__", None)
                               for name in ("linear", "relu", "gelu", "tanh", "")}}


def pretraining_heads_answers(original_dir, arrays):
    shim = original.tf1_namespace()
    modeling = original.modeling(original_dir, shim)
    get_mlm, get_nsp, gather = original.functions(
        original_dir, "run_pretraining.py", ["get_masked_lm_output", "get_next_sentence_output", "gather_indexes"],
        shim, modeling)
    config = modeling.BertConfig.from_dict(HEAD_CONFIG)
    rng = np.random.RandomState(5)
    h, v = HEAD_CONFIG["hidden_size"], HEAD_CONFIG["vocab_size"]
    arrays.update(
        sequence_output=rng.normal(size=(2, 5, h)).astype(np.float32),
        pooled_output=rng.normal(size=(2, h)).astype(np.float32),
        embedding_table=rng.normal(size=(v, h)).astype(np.float32) * 0.5,
        positions=np.array([[1, 3, 0], [4, 2, 2]], np.int32),
        label_ids=np.array([[5, 7, 0], [12, 1, 3]], np.int32),
        label_weights=np.array([[1, 1, 0], [1, 1, 1]], np.float32),
        nsp_labels=np.array([[0], [1]], np.int32))
    weights = {
        "cls/predictions/transform/dense/kernel": rng.normal(size=(h, h)).astype(np.float32) * 0.3,
        "cls/predictions/transform/dense/bias": rng.normal(size=(h,)).astype(np.float32) * 0.1,
        "cls/predictions/transform/LayerNorm/gamma": 1 + rng.normal(size=(h,)).astype(np.float32) * 0.1,
        "cls/predictions/transform/LayerNorm/beta": rng.normal(size=(h,)).astype(np.float32) * 0.1,
        "cls/predictions/output_bias": rng.normal(size=(v,)).astype(np.float32) * 0.1,
        "cls/seq_relationship/output_weights": rng.normal(size=(2, h)).astype(np.float32) * 0.3,
        "cls/seq_relationship/output_bias": rng.normal(size=(2,)).astype(np.float32) * 0.1,
    }
    for name, value in weights.items():
        arrays["weight:" + name] = value

    def build():
        constant = {k: v1.constant(arrays[k]) for k in ("sequence_output", "pooled_output", "embedding_table",
                                                        "positions", "label_ids", "label_weights", "nsp_labels")}
        mlm = get_mlm(config, constant["sequence_output"], constant["embedding_table"], constant["positions"],
                      constant["label_ids"], constant["label_weights"])
        nsp = get_nsp(config, constant["pooled_output"], constant["nsp_labels"])
        outputs = {"gathered": gather(constant["sequence_output"], constant["positions"])}
        for prefix, values in (("mlm", mlm), ("nsp", nsp)):
            for suffix, value in zip(("loss", "per_example_loss", "log_probs"), values):
                outputs[f"{prefix}_{suffix}"] = value
        return outputs, weights

    arrays.update(run_graph(build))


def optimizer_answers(original_dir, arrays):
    optimization = original.load(original_dir, "optimization.py", original.tf1_namespace())
    rng = np.random.RandomState(11)
    arrays["opt_kernel"] = rng.normal(size=(3, 2)).astype(np.float32)
    arrays["opt_bias"] = rng.normal(size=(2,)).astype(np.float32)
    arrays["opt_gradients"] = rng.normal(size=(3, 3, 2)).astype(np.float32)  # 3 steps, kernel then bias
    with v1.Graph().as_default(), v1.Session() as session:
        kernel = v1.get_variable("layer/kernel", initializer=arrays["opt_kernel"])
        bias = v1.get_variable("layer/bias", initializer=arrays["opt_bias"])
        grad_kernel = v1.placeholder(v1.float32, [3, 2])
        grad_bias = v1.placeholder(v1.float32, [2])
        optimizer = optimization.AdamWeightDecayOptimizer(
            learning_rate=0.1, weight_decay_rate=0.01, exclude_from_weight_decay=["bias"])
        train_op = optimizer.apply_gradients([(grad_kernel, kernel), (grad_bias, bias)])
        session.run(v1.global_variables_initializer())
        for step in range(3):
            gradients = arrays["opt_gradients"][step]
            session.run(train_op, {grad_kernel: gradients, grad_bias: gradients[0]})
        arrays["opt_kernel_after"], arrays["opt_bias_after"] = session.run([kernel, bias])


def main(original_dir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    v1.disable_eager_execution()
    tokenization = original.tokenization(original_dir)
    # This repository has a bert/ package too: the answers must come from the original's.
    assert os.path.samefile(os.path.dirname(tokenization.__file__), os.path.join(original_dir, "bert"))
    answers = {"pretraining_data": pretraining_data_answers(original_dir, tokenization),
               "extract_features": extract_features_answers(original_dir, tokenization),
               "classifier": classifier_answers(original_dir, tokenization)}
    arrays = collections.OrderedDict()
    answers["modeling"] = modeling_answers(original_dir, arrays)
    pretraining_heads_answers(original_dir, arrays)
    optimizer_answers(original_dir, arrays)
    with open(os.path.join(HERE, "original_api_golden.json"), "w", encoding="utf-8") as f:
        json.dump(answers, f, ensure_ascii=False, indent=1)
        f.write("\n")
    np.savez_compressed(os.path.join(HERE, "original_api_golden.npz"), **arrays)
    print("wrote original_api_golden.json and .npz:", ", ".join(arrays))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    original.add_argument(parser)
    main(parser.parse_args().original_dir)
