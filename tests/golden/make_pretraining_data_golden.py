"""Makes the create_pretraining_data golden files with the ORIGINAL code (run once, by hand).

Not part of the project or its tests: it loads the original google-research/bert
create_pretraining_data.py (PyPI bert-tensorflow 1.0.4, TF1 code) through
tf.compat.v1, which is allowed here and nowhere else, and runs it on the fixture
inputs beside this file. The tests compare our output with these records.

The original: see tests/golden/original.py.

    .venv/bin/python tests/golden/make_pretraining_data_golden.py --original_dir=/tmp/orig

bert-tensorflow 1.0.4 predates whole-word masking, so for scenario `wwm` its
masking function is replaced by one that follows create_pretraining_data.py at the
GitHub HEAD (candidates grouped by `##` pieces, a word skipped when it would overflow
the budget); everything else in that run is the original's.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

SCENARIOS = {
    "plain": dict(max_seq_length=128, max_predictions_per_seq=20, dupe_factor=2, random_seed=12345,
                  masked_lm_prob=0.15, short_seq_prob=0.1, do_lower_case=True, outputs=1),
    "short_cased": dict(max_seq_length=48, max_predictions_per_seq=6, dupe_factor=2, random_seed=7,
                        masked_lm_prob=0.2, short_seq_prob=0.3, do_lower_case=False, outputs=2),
    "wwm": dict(max_seq_length=64, max_predictions_per_seq=10, dupe_factor=2, random_seed=99,
                masked_lm_prob=0.15, short_seq_prob=0.1, do_lower_case=True, outputs=1),
}
INPUTS = ["pretraining_input_1.txt", "pretraining_input_2.txt"]


def wwm_masking(orig_module):
    """HEAD's whole-word masking, bound to the original module's types."""

    def create_masked_lm_predictions(tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng):
        cand_indexes = []
        for i, token in enumerate(tokens):
            if token in ("[CLS]", "[SEP]"):
                continue
            if cand_indexes and token.startswith("##"):
                cand_indexes[-1].append(i)
            else:
                cand_indexes.append([i])
        rng.shuffle(cand_indexes)
        output_tokens = list(tokens)
        num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
        chosen, covered = [], set()
        for index_set in cand_indexes:
            if len(chosen) >= num_to_predict:
                break
            if len(chosen) + len(index_set) > num_to_predict:
                continue
            if any(i in covered for i in index_set):
                continue
            for i in index_set:
                covered.add(i)
                if rng.random() < 0.8:
                    output_tokens[i] = "[MASK]"
                elif rng.random() < 0.5:
                    output_tokens[i] = tokens[i]
                else:
                    output_tokens[i] = vocab_words[rng.randint(0, len(vocab_words) - 1)]
                chosen.append(orig_module.MaskedLmInstance(index=i, label=tokens[i]))
        chosen.sort(key=lambda x: x.index)
        return output_tokens, [p.index for p in chosen], [p.label for p in chosen]

    return create_masked_lm_predictions


def main(original_dir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    from tests import helpers
    from tests.golden import original
    orig_tokenization = original.tokenization(original_dir)
    orig = original.load(original_dir, "create_pretraining_data.py", modules={"tokenization": orig_tokenization})
    original_masking = orig.create_masked_lm_predictions
    import random

    vocab_file = helpers.real_vocab_file()
    inputs = [os.path.join(HERE, name) for name in INPUTS]
    for name, s in SCENARIOS.items():
        orig.create_masked_lm_predictions = wwm_masking(orig) if name == "wwm" else original_masking
        tokenizer = orig_tokenization.FullTokenizer(vocab_file=vocab_file, do_lower_case=s["do_lower_case"])
        rng = random.Random(s["random_seed"])
        instances = orig.create_training_instances(
            inputs, tokenizer, s["max_seq_length"], s["dupe_factor"], s["short_seq_prob"], s["masked_lm_prob"],
            s["max_predictions_per_seq"], rng)
        outputs = [os.path.join(HERE, f"pretraining_{name}_{k}.tfrecord") for k in range(s["outputs"])]
        orig.write_instance_to_example_files(instances, tokenizer, s["max_seq_length"],
                                             s["max_predictions_per_seq"], outputs)
        print(name, len(instances), "instances ->", ", ".join(os.path.basename(o) for o in outputs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    from tests.golden import original
    original.add_argument(parser)
    main(parser.parse_args().original_dir)
