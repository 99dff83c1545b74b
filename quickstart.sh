#!/usr/bin/env bash
# The main job on the bundled sample, end to end, in out/quickstart/:
#   sample_text.txt -> build_vocab.py -> vocab.txt
#                   -> create_pretraining_data.py -> pretraining TFRecords
#                   -> run_pretraining.py -> checkpoint + eval_results.txt
# Uses $PYTHON (default: the repo's .venv). Safe to re-run: pretraining resumes.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}
OUT=out/quickstart
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=2

echo "== 1/3 learn a 2,000-piece WordPiece vocab from sample_text.txt"
"$PYTHON" build_vocab.py --input_file=sample_text.txt --output_file="$OUT/vocab.txt" \
  --vocab_size=2000 --min_count=2 --do_lower_case=True 2>"$OUT/build_vocab.log"
echo "   $(wc -l < "$OUT/vocab.txt") entries -> $OUT/vocab.txt"

echo "== 2/3 create masked-LM / next-sentence TFRecords"
"$PYTHON" create_pretraining_data.py --input_file=sample_text.txt --output_file="$OUT/tf_examples.tfrecord" \
  --vocab_file="$OUT/vocab.txt" --do_lower_case=True --max_seq_length=128 --max_predictions_per_seq=20 \
  --masked_lm_prob=0.15 --random_seed=12345 --dupe_factor=5 2>"$OUT/create_pretraining_data.log"
grep -o "Wrote [0-9]* total instances" "$OUT/create_pretraining_data.log" | sed 's/^/   /'

echo "== 3/3 pretrain a 2-layer BERT for 300 steps, then evaluate"
"$PYTHON" run_pretraining.py --input_file="$OUT/tf_examples.tfrecord" --output_dir="$OUT/pretraining_output" \
  --do_train=True --do_eval=True --bert_config_file=sample_bert_config.json \
  --train_batch_size=32 --max_seq_length=128 --max_predictions_per_seq=20 \
  --num_train_steps=300 --num_warmup_steps=30 --learning_rate=1e-3 --save_checkpoints_steps=100 \
  --log_steps=50 --seed=12345 2>"$OUT/run_pretraining.log"
grep -o "step = [0-9]*/.*" "$OUT/run_pretraining.log" | sed 's/^/   /'
echo "   $OUT/pretraining_output/eval_results.txt:"
sed 's/^/     /' "$OUT/pretraining_output/eval_results.txt"
