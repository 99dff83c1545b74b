#!/usr/bin/env bash
# The main job on the bundled sample, end to end, in out/quickstart/:
#   sample_text.txt -> build_vocab.py -> vocab.txt
#                   -> create_pretraining_data.py -> pretraining TFRecords
#                   -> run_pretraining.py -> checkpoint + eval_results.txt
#                   -> run_classifier.py (next-sentence pairs, MRPC layout) -> metrics + SavedModel
#                   -> run_squad.py (cloze questions, SQuAD 1.1 layout) -> predictions + EM/F1
# A 2-layer model trained for minutes on 120 KB of text shows the pipeline, not good numbers.
# Uses $PYTHON (default: the repo's .venv). Safe to re-run: pretraining resumes.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}
OUT=out/quickstart
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=2

echo "== 1/5 learn a 2,000-piece WordPiece vocab from sample_text.txt"
"$PYTHON" build_vocab.py --input_file=sample_text.txt --output_file="$OUT/vocab.txt" \
  --vocab_size=2000 --min_count=2 --do_lower_case=True 2>"$OUT/build_vocab.log"
echo "   $(wc -l < "$OUT/vocab.txt") entries -> $OUT/vocab.txt"

echo "== 2/5 create masked-LM / next-sentence TFRecords"
"$PYTHON" create_pretraining_data.py --input_file=sample_text.txt --output_file="$OUT/tf_examples.tfrecord" \
  --vocab_file="$OUT/vocab.txt" --do_lower_case=True --max_seq_length=128 --max_predictions_per_seq=20 \
  --masked_lm_prob=0.15 --random_seed=12345 --dupe_factor=5 2>"$OUT/create_pretraining_data.log"
grep -o "Wrote [0-9]* total instances" "$OUT/create_pretraining_data.log" | sed 's/^/   /' || true

echo "== 3/5 pretrain a 2-layer BERT for 300 steps, then evaluate"
"$PYTHON" run_pretraining.py --input_file="$OUT/tf_examples.tfrecord" --output_dir="$OUT/pretraining_output" \
  --do_train=True --do_eval=True --bert_config_file=sample_bert_config.json \
  --train_batch_size=32 --max_seq_length=128 --max_predictions_per_seq=20 \
  --num_train_steps=300 --num_warmup_steps=30 --learning_rate=3e-4 --save_checkpoints_steps=100 \
  --log_steps=50 --seed=12345 2>"$OUT/run_pretraining.log"
grep -o "step = [0-9]*/.*\|Training already done.*" "$OUT/run_pretraining.log" | sed 's/^/   /' || true
echo "   $OUT/pretraining_output/eval_results.txt:"
sed 's/^/     /' "$OUT/pretraining_output/eval_results.txt"

PRETRAINED="$OUT/pretraining_output/model.ckpt-300"
echo "== 4/5 fine-tune a classifier: is sentence B the one that follows A? (MRPC file layout)"
"$PYTHON" sample_tasks.py --task=pairs --output_dir="$OUT/pairs" | sed 's/^/   /'
"$PYTHON" run_classifier.py --task_name=MRPC --do_train=true --do_eval=true --do_predict=true \
  --data_dir="$OUT/pairs" --vocab_file="$OUT/vocab.txt" --bert_config_file=sample_bert_config.json \
  --init_checkpoint="$PRETRAINED" --max_seq_length=64 --train_batch_size=16 --learning_rate=3e-5 \
  --num_train_epochs=6 --output_dir="$OUT/classifier_output" --export_dir="$OUT/classifier_export" \
  --seed=12345 --log_steps=50 2>"$OUT/run_classifier.log"
echo "   $OUT/classifier_output/eval_results.txt:"
sed 's/^/     /' "$OUT/classifier_output/eval_results.txt"
echo "   the exported SavedModel on two raw sentence pairs:"
"$PYTHON" - "$OUT/classifier_export" 2>/dev/null <<'PY'
import sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the in-graph WordPiece op)
model = tf.saved_model.load(sys.argv[1])
pairs = [("The human skeleton of an adult contains 206 bones.",
          "Babies are born with closer to 300, but many of them fuse together during childhood."),
         ("The human skeleton of an adult contains 206 bones.",
          "Add the onions and cook them slowly until golden.")]
out = model.signatures["serving_default"](text_a=tf.constant([a for a, _ in pairs]),
                                          text_b=tf.constant([b for _, b in pairs]))
for (a, b), p in zip(pairs, out["probabilities"].numpy()):
    print(f"     P(B follows A) = {p[1]:.3f}   A: {a[:40]}...  B: {b[:40]}...")
PY

echo "== 5/5 fine-tune SQuAD 1.1 on cloze questions made from the sample, then answer the dev set"
"$PYTHON" sample_tasks.py --task=squad --output_dir="$OUT/squad" | sed 's/^/   /'
"$PYTHON" run_squad.py --vocab_file="$OUT/vocab.txt" --bert_config_file=sample_bert_config.json \
  --init_checkpoint="$PRETRAINED" --do_train=True --train_file="$OUT/squad/train-v1.1.json" \
  --do_predict=True --predict_file="$OUT/squad/dev-v1.1.json" --train_batch_size=16 --learning_rate=1e-3 \
  --num_train_epochs=10.0 --max_seq_length=128 --doc_stride=64 --max_query_length=48 \
  --output_dir="$OUT/squad_output" --seed=12345 --log_steps=50 >"$OUT/run_squad.out" 2>"$OUT/run_squad.log"
echo "   $OUT/squad_output/eval_results.json:"
sed 's/^/     /' "$OUT/squad_output/eval_results.json"
echo "   a few answers ($OUT/squad_output/predictions.json):"
"$PYTHON" - "$OUT/squad/dev-v1.1.json" "$OUT/squad_output/predictions.json" <<'PY'
import json, sys
data, predictions = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
qas = [qa for article in data["data"] for p in article["paragraphs"] for qa in p["qas"]][:3]
for qa in qas:
    print(f"     Q: {qa['question'][:70]}\n        gold: {qa['answers'][0]['text']!r}  predicted: {predictions[qa['id']]!r}")
PY
