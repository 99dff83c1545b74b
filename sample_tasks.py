"""Small task datasets derived from sample_text.txt, for the quick start and the tests.

`write_pair_task` writes a sentence-pair classification set in the MRPC file layout
(train.tsv, dev.tsv, test.tsv): label 1 when sentence B is the sentence that follows A
in its document, 0 when B comes from another document. Any BERT runner that reads MRPC
(`--task_name=mrpc`) reads it unchanged.

`write_squad_task` writes cloze-style SQuAD 1.1 files (train-v1.1.json, dev-v1.1.json):
the context is a document, the question one of its sentences with a number or a
capitalised word replaced by "what", and the answer that word, at its offset.
"""

import json
import os
import random
import re
import sys

from absl import app, flags

import cli


def read_documents(path):
    """Documents of a one-sentence-per-line file, as lists of sentences."""
    documents, current = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                documents.append(current)
                current = []
    if current:
        documents.append(current)
    return documents


def next_sentence_pairs(documents, rng):
    """(label, sentence A, sentence B) pairs: half true continuations, half random sentences."""
    pairs = []
    for index, document in enumerate(documents):
        for i in range(len(document) - 1):
            if rng.random() < 0.5:
                pairs.append(("1", document[i], document[i + 1]))
            else:
                other = rng.choice([d for j, d in enumerate(documents) if j != index] or [document])
                pairs.append(("0", document[i], rng.choice(other)))
    return pairs


def write_pair_task(input_file, output_dir, seed=12345, dev_fraction=0.1, test_fraction=0.1):
    """Writes the MRPC-layout next-sentence task; returns {split: number of examples}."""
    rng = random.Random(seed)
    documents = read_documents(input_file)
    rng.shuffle(documents)
    n = len(documents)
    n_dev, n_test = max(1, int(n * dev_fraction)), max(1, int(n * test_fraction))
    splits = {"dev": documents[:n_dev], "test": documents[n_dev:n_dev + n_test],
              "train": documents[n_dev + n_test:]}
    os.makedirs(output_dir, exist_ok=True)
    counts = {}
    for name, docs in splits.items():
        pairs = next_sentence_pairs(docs, rng)
        write_mrpc_split(os.path.join(output_dir, f"{name}.tsv"), pairs, test=name == "test")
        counts[name] = len(pairs)
    return counts


def write_mrpc_split(path, pairs, test=False):
    """Writes (label, text_a, text_b) pairs as one MRPC-layout TSV split (a test split has no labels)."""
    if test:
        header = "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        rows = [(str(i), str(2 * i), str(2 * i + 1), a, b) for i, (_, a, b) in enumerate(pairs)]
    else:
        header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        rows = [(label, str(2 * i), str(2 * i + 1), a, b) for i, (label, a, b) in enumerate(pairs)]
    cli.write_text(path, header + "".join("\t".join(field.replace("\t", " ") for field in row) + "\n"
                                          for row in rows))


# A number, or a capitalised word that does not start its sentence.
_ANSWER_RE = re.compile(r"(?<=[ (])(\d[\d,.]*\d|\d|[A-Z][a-z]{2,})(?=[ ,.;:)])")


def cloze_questions(document, rng, document_id):
    """SQuAD-style {"context", "qas"} for one document (sentences joined by spaces)."""
    context = " ".join(document)
    qas = []
    offset = 0
    for index, sentence in enumerate(document):
        matches = list(_ANSWER_RE.finditer(sentence))
        if matches:
            match = rng.choice(matches)
            question = sentence[:match.start()] + "what" + sentence[match.end():]
            qas.append({"id": f"{document_id}-{index}", "question": question,
                        "answers": [{"text": match.group(0), "answer_start": offset + match.start()}]})
        offset += len(sentence) + 1
    return {"context": context, "qas": qas}


def write_squad_task(input_file, output_dir, seed=12345, dev_fraction=0.15):
    """Writes train-v1.1.json and dev-v1.1.json; returns {file: number of questions}."""
    rng = random.Random(seed)
    documents = [d for d in read_documents(input_file) if len(d) >= 2]
    rng.shuffle(documents)
    n_dev = max(1, int(len(documents) * dev_fraction))
    counts = {}
    os.makedirs(output_dir, exist_ok=True)
    for name, docs in (("dev-v1.1.json", documents[:n_dev]), ("train-v1.1.json", documents[n_dev:])):
        paragraphs = [cloze_questions(d, rng, f"{name.split('-')[0]}{i}") for i, d in enumerate(docs)]
        paragraphs = [p for p in paragraphs if p["qas"]]
        path = os.path.join(output_dir, name)
        cli.write_text(path, json.dumps({"version": "1.1", "data": [{"title": "sample_text",
                                                                      "paragraphs": paragraphs}]}))
        counts[name] = sum(len(p["qas"]) for p in paragraphs)
    return counts


def main(argv):
    del argv
    if flags.FLAGS.task == "pairs":
        counts = write_pair_task(flags.FLAGS.input_file, flags.FLAGS.output_dir, flags.FLAGS.seed)
        sys.stdout.write(", ".join(f"{name}: {count} pairs" for name, count in counts.items()) + "\n")
    else:
        counts = write_squad_task(flags.FLAGS.input_file, flags.FLAGS.output_dir, flags.FLAGS.seed)
        sys.stdout.write(", ".join(f"{name}: {count} questions" for name, count in counts.items()) + "\n")


if __name__ == "__main__":
    flags.DEFINE_string("input_file", "sample_text.txt", "One sentence per line, blank lines between documents.")
    flags.DEFINE_enum("task", "pairs", ["pairs", "squad"],
                      "pairs: MRPC-layout next-sentence pairs; squad: cloze-style SQuAD 1.1 files.")
    flags.DEFINE_string("output_dir", None, "Where the task files go.")
    flags.DEFINE_integer("seed", 12345, "Seed of the split and of the random pairs.")
    flags.mark_flag_as_required("output_dir")
    app.run(main)
