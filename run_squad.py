"""SQuAD 1.1 and 2.0: fine-tuning, prediction and evaluation, as the original script.

Reads SQuAD JSON, splits each question's paragraph into `doc_stride` windows of WordPieces,
trains the span head (`cls/squad/output_weights`) on BERT, and writes `predictions.json`,
`nbest_predictions.json` and (v2.0) `null_odds.json` exactly as the original does. When the
predict file carries answers, it also scores the predictions with the official SQuAD v1.1
or v2.0 rules and writes `eval_results.json`.
"""

import collections
import contextlib
import dataclasses
import gc
import itertools
import json
import math
import multiprocessing
import os
import random
import re
import string
import weakref

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import cli  # first: it imports TensorFlow without the start-up notices

cli.import_tensorflow()

from absl import flags, logging
import keras
import numpy as np
import tensorflow as tf

import input_pipeline
import modeling
import tokenization
import training

FLAGS = flags.FLAGS

FIRST_UNIQUE_ID = 1000000000
LOGGED_EXAMPLES = 20  # the original logs every window of the first 20 examples


def define_flags():
    """Defines the script's flags (only when run as a script, so modules can be imported together)."""
    flags.DEFINE_string("bert_config_file", None,
                        "The config json file of the pre-trained BERT model (its architecture).")
    flags.DEFINE_string("vocab_file", None, "The vocabulary file that the BERT model was trained on.")
    flags.DEFINE_string("output_dir", None, "Where checkpoints, features and predictions are written.")
    flags.DEFINE_string("train_file", None, "SQuAD json for training, e.g. train-v1.1.json.")
    flags.DEFINE_string("predict_file", None, "SQuAD json to predict on, e.g. dev-v1.1.json or test-v1.1.json.")
    flags.DEFINE_string("init_checkpoint", None, "Initial checkpoint (usually from a pre-trained BERT model).")
    flags.DEFINE_bool("do_lower_case", True,
                      "Lower-case the input text: True for uncased models, False for cased models.")
    flags.DEFINE_integer("max_seq_length", 384,
                         "Length of every window after WordPiece tokenization ([CLS] question [SEP] "
                         "document piece [SEP], padded).")
    flags.DEFINE_integer("doc_stride", 128, "How far apart the windows over a long document start.")
    flags.DEFINE_integer("max_query_length", 64,
                         "Questions are truncated to this many WordPieces.")
    flags.DEFINE_bool("do_train", False, "Whether to run training.")
    flags.DEFINE_bool("do_predict", False, "Whether to predict on --predict_file.")
    flags.DEFINE_integer("train_batch_size", 32, "Total batch size for training.")
    flags.DEFINE_integer("predict_batch_size", 8, "Total batch size for predictions.")
    flags.DEFINE_float("learning_rate", 5e-5, "The initial learning rate for Adam.")
    flags.DEFINE_float("num_train_epochs", 3.0, "Total number of training epochs to perform.")
    flags.DEFINE_float("warmup_proportion", 0.1,
                       "Proportion of training with a linear learning-rate warmup (0.1 = 10%).")
    flags.DEFINE_integer("n_best_size", 20, "How many n-best answers nbest_predictions.json lists per question.")
    flags.DEFINE_integer("max_answer_length", 30,
                         "Longest answer, in WordPieces (start and end are predicted independently).")
    flags.DEFINE_bool("verbose_logging", False,
                      "Log every failure to map a predicted answer back onto the original text.")
    flags.DEFINE_bool("version_2_with_negative", False, "SQuAD 2.0: some questions have no answer.")
    flags.DEFINE_float("null_score_diff_threshold", 0.0,
                       "Predict no answer when null_score - best_non_null_score exceeds this.")
    flags.DEFINE_integer("num_workers", 1, "Processes that convert questions to features (new).")
    flags.DEFINE_bool("real_length", False,
                      "Run each batch at its longest real window instead of --max_seq_length, with padding "
                      "positions left out of the span softmax and of the n-best candidates (new). Faster on "
                      "short contexts, but not the original's numbers: the original's span softmax and n-best "
                      "ranking include the padding positions, so its loss, its trajectory and some n-best "
                      "lists differ. Off: the original's behaviour.")
    training.define_tpu_flags(flags)
    training.define_engine_flags(flags)


# --- Reading SQuAD JSON -----------------------------------------------------------------------

class SquadExample:
    """One question and its paragraph, split into whitespace words.

    `start_position`/`end_position` are word indexes of the answer (training only; -1 for
    an impossible question). `answers` holds every gold answer text of the file (None when
    the question has no "answers" field), for the built-in evaluation.
    """

    __slots__ = ("qas_id", "question_text", "doc_tokens", "orig_answer_text", "start_position", "end_position",
                 "is_impossible", "answers")

    def __init__(self, qas_id, question_text, doc_tokens, orig_answer_text=None, start_position=None,
                 end_position=None, is_impossible=False, answers=None):
        # 8 parameters: the original's record type, field for field.
        self.qas_id = qas_id
        self.question_text = question_text
        self.doc_tokens = doc_tokens
        self.orig_answer_text = orig_answer_text
        self.start_position = start_position
        self.end_position = end_position
        self.is_impossible = is_impossible
        self.answers = answers

    def __repr__(self):
        text = f"qas_id: {self.qas_id}, question_text: {self.question_text}, doc_tokens: [{' '.join(self.doc_tokens)}]"
        if self.start_position is not None:
            text += f", start_position: {self.start_position}, end_position: {self.end_position}"
            text += f", is_impossible: {self.is_impossible}"
        return text


def is_squad_whitespace(c):
    """The original's document whitespace: space, tab, CR, LF and U+202F only."""
    return c in " \t\r\n\u202f"


_WORD = re.compile("[^ \t\r\n\u202f]+")


def split_paragraph(text):
    """Splits a context into words; maps each character to the index of its word.

    Returns:
        (doc_tokens, char_to_word_offset): whitespace characters map to the word before
        them (-1 before the first word).
    """
    doc_tokens, char_to_word_offset = [], []
    end = 0
    for match in _WORD.finditer(text):
        start = match.start()
        char_to_word_offset.extend([len(doc_tokens) - 1] * (start - end))
        end = match.end()
        char_to_word_offset.extend([len(doc_tokens)] * (end - start))
        doc_tokens.append(match.group())
    char_to_word_offset.extend([len(doc_tokens) - 1] * (len(text) - end))
    return doc_tokens, char_to_word_offset


def _load_squad_json(input_file):
    try:
        with cli.open_input(input_file) as reader:
            return json.loads(reader.read().decode("utf-8"))
    except (tf.errors.NotFoundError, FileNotFoundError):
        raise ValueError(f"{input_file}: no such file") from None
    except (tf.errors.OpError, OSError) as e:
        raise ValueError(f"cannot read {input_file}: {getattr(e, 'strerror', None) or cli.describe_error(e)}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{input_file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{input_file}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _field(node, key, where, input_file, kind):
    """node[key], or one clear error naming the file, the place and the field."""
    if not isinstance(node, dict) or key not in node:
        raise ValueError(f"{input_file}: {where} has no \"{key}\" field (SQuAD format: "
                         f"{{\"data\": [{{\"paragraphs\": [{{\"context\", \"qas\": [{{\"id\", \"question\", "
                         f"\"answers\": [{{\"text\", \"answer_start\"}}]}}]}}]}}]}})")
    value = node[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ValueError(f"{input_file}: {where}.{key} should be a {names}, not {type(value).__name__}")
    return value


def read_squad_examples(input_file, is_training, version_2_with_negative=False, stats=None):
    """Reads a SQuAD json file into a list of `SquadExample`, one per question, in file order.

    In training, a question whose answer text cannot be found at its `answer_start` is
    dropped (warning `Could not find answer`), as in the original.

    Args:
        input_file: SQuAD 1.1 or 2.0 json.
        is_training: read the answers as training targets.
        version_2_with_negative: read `is_impossible` (training; absent means False).
        stats: optional collections.Counter; counts "questions" and "answer_not_found".

    Raises:
        ValueError: malformed JSON, a missing or mistyped field, an empty context, or a
            training question (not impossible) without exactly one answer.
    """
    stats = stats if stats is not None else collections.Counter()
    data = _field(_load_squad_json(input_file), "data", "the top level", input_file, list)
    examples = []
    for a, article in enumerate(data):
        paragraphs = _field(article, "paragraphs", f"data[{a}]", input_file, list)
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", where, input_file, str)
            qas = _field(paragraph, "qas", where, input_file, list)
            doc_tokens, char_to_word_offset = split_paragraph(context)
            if qas and not doc_tokens:
                raise ValueError(f"{input_file}: {where}.context is empty or only whitespace; give it its text "
                                 f"or remove the paragraph")
            for q, qa in enumerate(qas):
                qa_where = f"{where}.qas[{q}]"
                qas_id = _field(qa, "id", qa_where, input_file, (str, int))
                question_text = _field(qa, "question", qa_where, input_file, str)
                stats["questions"] += 1
                answers = None
                if isinstance(qa, dict) and isinstance(qa.get("answers"), list):
                    answers = [ans.get("text") if isinstance(ans, dict) else None for ans in qa["answers"]]
                    answers = [text for text in answers if isinstance(text, str)]
                example = SquadExample(qas_id, question_text, doc_tokens, answers=answers)
                if is_training and not _read_training_answer(example, qa, qa_where, input_file, char_to_word_offset,
                                                             version_2_with_negative, stats):
                    continue
                examples.append(example)
    return examples


def _read_training_answer(example, qa, where, input_file, char_to_word_offset, version_2_with_negative, stats):
    """Sets the example's answer; False when the original would drop the question."""
    if version_2_with_negative:
        example.is_impossible = bool(qa.get("is_impossible", False))
    if example.is_impossible:
        example.start_position, example.end_position, example.orig_answer_text = -1, -1, ""
        return True
    answers = _field(qa, "answers", where, input_file, list)
    if len(answers) != 1:
        raise ValueError(f"{input_file}: {where} (id {example.qas_id}) has {len(answers)} answers; for training "
                         f"each question needs exactly 1 answer")
    text = _field(answers[0], "text", f"{where}.answers[0]", input_file, str)
    offset = _field(answers[0], "answer_start", f"{where}.answers[0]", input_file, int)
    end_offset = offset + len(text) - 1
    doc_tokens = example.doc_tokens
    if 0 <= offset <= end_offset < len(char_to_word_offset):
        start_word, end_word = char_to_word_offset[offset], char_to_word_offset[end_offset]
        actual_text = " ".join(doc_tokens[start_word:end_word + 1])
    else:
        start_word = end_word = None
        actual_text = ""
    cleaned_answer_text = " ".join(tokenization.whitespace_tokenize(text))
    # Only answers that the words at answer_start really contain (an offset that does not
    # match its text, odd Unicode) are kept, as the original.
    if start_word is None or actual_text.find(cleaned_answer_text) == -1:
        logging.warning("Could not find answer: '%s' vs. '%s'", actual_text, cleaned_answer_text)
        stats["answer_not_found"] += 1
        return False
    example.orig_answer_text = text
    example.start_position, example.end_position = start_word, end_word
    return True


# --- Features: windows of WordPieces ---------------------------------------------------------

class InputFeatures:
    """One window of one example, as the model sees it, plus the maps back to the words."""

    __slots__ = ("unique_id", "example_index", "doc_span_index", "tokens", "token_to_orig_map",
                 "token_is_max_context", "input_ids", "input_mask", "segment_ids", "start_position",
                 "end_position", "is_impossible", "__weakref__")

    def __init__(self, unique_id, example_index, doc_span_index, tokens, token_to_orig_map, token_is_max_context,
                 input_ids, input_mask, segment_ids, start_position=None, end_position=None, is_impossible=None):
        # 12 parameters: the original's record type, field for field.
        self.unique_id = unique_id
        self.example_index = example_index
        self.doc_span_index = doc_span_index
        self.tokens = tokens
        self.token_to_orig_map = token_to_orig_map
        self.token_is_max_context = token_is_max_context
        self.input_ids = input_ids
        self.input_mask = input_mask
        self.segment_ids = segment_ids
        self.start_position = start_position
        self.end_position = end_position
        self.is_impossible = is_impossible


DocSpan = collections.namedtuple("DocSpan", ["start", "length"])


def make_doc_spans(num_doc_tokens, max_tokens_for_doc, doc_stride):
    """Windows over the document pieces: each as long as fits, starts `doc_stride` apart."""
    spans = []
    start = 0
    while start < num_doc_tokens:
        length = min(num_doc_tokens - start, max_tokens_for_doc)
        spans.append(DocSpan(start, length))
        if start + length == num_doc_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_span_indexes(doc_spans, num_doc_tokens):
    """For every document piece, the window where it has the most context.

    A piece's score in a window is min(left context, right context) + 0.01 * window length;
    the first window with the strictly highest score wins (the original's
    `_check_is_max_context`, computed for all pieces at once).
    """
    best_scores = [None] * num_doc_tokens
    best_indexes = [None] * num_doc_tokens
    for span_index, span in enumerate(doc_spans):
        end = span.start + span.length - 1
        bonus = 0.01 * span.length
        for position in range(span.start, end + 1):
            score = min(position - span.start, end - position) + bonus
            best = best_scores[position]
            if best is None or score > best:
                best_scores[position] = score
                best_indexes[position] = span_index
    return best_indexes


def _check_is_max_context(doc_spans, cur_span_index, position):
    """Whether window `cur_span_index` is the max-context window of piece `position`."""
    best_score, best_index = None, None
    for span_index, span in enumerate(doc_spans):
        end = span.start + span.length - 1
        if span.start <= position <= end:
            score = min(position - span.start, end - position) + 0.01 * span.length
            if best_score is None or score > best_score:
                best_score, best_index = score, span_index
    return cur_span_index == best_index


def _improve_answer_span(doc_tokens, input_start, input_end, tokenizer, orig_answer_text):
    """Narrows a word-aligned answer span to the pieces that spell the annotated answer.

    The annotation is character based; projected onto whole words, "1895" inside
    "(1895-1943)." covers the pieces "( 1895 - 1943 ) .". The first sub-span (earliest start,
    then latest end) whose pieces equal the tokenized answer is returned, else the input span
    (an answer inside a word, "Japan" in "Japanese", keeps the whole word).
    """
    tok_answer_text = " ".join(tokenizer.tokenize(orig_answer_text))
    for new_start in range(input_start, input_end + 1):
        for new_end in range(input_end, new_start - 1, -1):
            if " ".join(doc_tokens[new_start:new_end + 1]) == tok_answer_text:
                return new_start, new_end
    return input_start, input_end


_WORD_PIECES_LIMIT = 1 << 20  # distinct words remembered per tokenizer before starting over
_word_pieces_by_tokenizer = weakref.WeakKeyDictionary()


def _word_pieces(tokenizer, word):
    """(WordPieces, ids) of one document word, remembered: contexts repeat their words."""
    cache = _word_pieces_by_tokenizer.setdefault(tokenizer, {})
    found = cache.get(word)
    if found is None:
        if len(cache) >= _WORD_PIECES_LIMIT:
            cache.clear()
        pieces = tokenizer.tokenize(word)
        found = cache[word] = (pieces, tokenizer.convert_tokens_to_ids(pieces))
    return found


def convert_example_to_features(example, example_index, tokenizer, max_seq_length, doc_stride, max_query_length,
                                is_training):
    """The windows of one example, without unique ids (the caller numbers them).

    Returns:
        (list of InputFeatures with unique_id None, whether the question was truncated).
    """
    query_tokens = tokenizer.tokenize(example.question_text)
    truncated = len(query_tokens) > max_query_length
    query_tokens = query_tokens[:max_query_length]

    tok_to_orig_index, orig_to_tok_index, all_doc_tokens, all_doc_ids = [], [], [], []
    for i, word in enumerate(example.doc_tokens):
        orig_to_tok_index.append(len(all_doc_tokens))
        pieces, ids = _word_pieces(tokenizer, word)
        tok_to_orig_index.extend([i] * len(pieces))
        all_doc_tokens.extend(pieces)
        all_doc_ids.extend(ids)
    if not all_doc_tokens:
        raise ValueError(f"question {example.qas_id}: its context has no WordPiece tokens (only whitespace, "
                         f"control or unknown characters); give the paragraph its text or remove it")

    tok_start_position = tok_end_position = None
    if is_training and example.is_impossible:
        tok_start_position = tok_end_position = -1
    elif is_training:
        tok_start_position = orig_to_tok_index[example.start_position]
        if example.end_position < len(example.doc_tokens) - 1:
            tok_end_position = orig_to_tok_index[example.end_position + 1] - 1
        else:
            tok_end_position = len(all_doc_tokens) - 1
        tok_start_position, tok_end_position = _improve_answer_span(
            all_doc_tokens, tok_start_position, tok_end_position, tokenizer, example.orig_answer_text)

    max_tokens_for_doc = max_seq_length - len(query_tokens) - 3  # [CLS] query [SEP] window [SEP]
    doc_spans = make_doc_spans(len(all_doc_tokens), max_tokens_for_doc, doc_stride)
    max_context = max_context_span_indexes(doc_spans, len(all_doc_tokens))
    query_ids = tokenizer.convert_tokens_to_ids(query_tokens)
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    doc_offset = len(query_tokens) + 2

    features = []
    for span_index, span in enumerate(doc_spans):
        window = all_doc_tokens[span.start:span.start + span.length]
        tokens = ["[CLS]"] + query_tokens + ["[SEP]"] + window + ["[SEP]"]
        span_end = span.start + span.length
        input_ids = [cls_id] + query_ids + [sep_id] + all_doc_ids[span.start:span_end] + [sep_id]
        segment_ids = [0] * doc_offset + [1] * (span.length + 1)
        positions = range(doc_offset, doc_offset + span.length)
        token_to_orig_map = dict(zip(positions, tok_to_orig_index[span.start:span_end]))
        token_is_max_context = dict(zip(positions, [best == span_index for best in max_context[span.start:span_end]]))
        padding = max_seq_length - len(input_ids)
        input_mask = [1] * len(input_ids) + [0] * padding
        input_ids += [0] * padding
        segment_ids += [0] * padding

        start_position = end_position = None
        if is_training and example.is_impossible:
            start_position = end_position = 0
        elif is_training:
            if span.start <= tok_start_position and tok_end_position < span_end:
                start_position = tok_start_position - span.start + doc_offset
                end_position = tok_end_position - span.start + doc_offset
            else:
                # A window without the whole answer is kept, with the [CLS] position as target.
                start_position = end_position = 0
        features.append(InputFeatures(None, example_index, span_index, tokens, token_to_orig_map,
                                      token_is_max_context, input_ids, input_mask, segment_ids, start_position,
                                      end_position, example.is_impossible))
    return features, truncated


def _log_feature(feature, is_training):
    logging.info("*** Example ***")
    logging.info("unique_id: %s", feature.unique_id)
    logging.info("example_index: %s", feature.example_index)
    logging.info("doc_span_index: %s", feature.doc_span_index)
    logging.info("tokens: %s", " ".join(tokenization.printable_text(x) for x in feature.tokens))
    logging.info("token_to_orig_map: %s", " ".join(f"{k}:{v}" for k, v in feature.token_to_orig_map.items()))
    logging.info("token_is_max_context: %s", " ".join(f"{k}:{v}" for k, v in feature.token_is_max_context.items()))
    logging.info("input_ids: %s", " ".join(str(x) for x in feature.input_ids))
    logging.info("input_mask: %s", " ".join(str(x) for x in feature.input_mask))
    logging.info("segment_ids: %s", " ".join(str(x) for x in feature.segment_ids))
    if is_training and feature.is_impossible:
        logging.info("impossible example")
    elif is_training:
        answer_text = " ".join(feature.tokens[feature.start_position:feature.end_position + 1])
        logging.info("start_position: %d", feature.start_position)
        logging.info("end_position: %d", feature.end_position)
        logging.info("answer: %s", tokenization.printable_text(answer_text))


_worker_state = {}


def _init_feature_worker(tokenizer, settings, examples=None):
    _worker_state.update(tokenizer=tokenizer, settings=settings, examples=examples)
    cli.die_with_parent()


def _convert_chunk(indexed_examples):
    """Worker: features of a chunk of (example_index, example)."""
    tokenizer, settings = _worker_state["tokenizer"], _worker_state["settings"]
    return [convert_example_to_features(example, index, tokenizer, **settings) for index, example in indexed_examples]


# A training record is made in a worker before its unique_id is known (it depends on the
# windows of every earlier question): the worker serializes it with this placeholder id and
# sends the bytes before and after the id's varint; the parent joins them around the real id.
# Both ids take 5 varint bytes (ids below 2**35), so no length prefix changes. The
# placeholder's varint (4 continuation bytes) cannot occur elsewhere in a record: every
# other value, tag and length is below 2**28.
_PLACEHOLDER_ID = FIRST_UNIQUE_ID


def _encode_varint(value):
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_PLACEHOLDER_VARINT = _encode_varint(_PLACEHOLDER_ID)


def _split_record(feature):
    """(bytes before the unique_id varint, bytes after) of the feature's training record."""
    feature.unique_id = _PLACEHOLDER_ID
    record = serialize_feature(feature, True)
    at = record.find(_PLACEHOLDER_VARINT)
    if at < 0 or record.find(_PLACEHOLDER_VARINT, at + 1) >= 0:
        raise RuntimeError("unique_id placeholder not found exactly once in a training record")
    return record[:at], record[at + len(_PLACEHOLDER_VARINT):]


def _join_record(parts, unique_id):
    """The training record of `parts` (from _split_record) with `unique_id`, as serialize_feature makes it."""
    head, tail = parts
    encoded = _encode_varint(unique_id)
    if len(encoded) == len(_PLACEHOLDER_VARINT):
        return b"".join((head, encoded, tail))
    # Never with fewer than 2**35 - 10**9 windows; rebuilt from the parsed record otherwise.
    example = tf.train.Example.FromString(b"".join((head, _PLACEHOLDER_VARINT, tail)))
    values = collections.OrderedDict()
    for name in ("unique_ids", "input_ids", "input_mask", "segment_ids", "start_positions", "end_positions",
                 "is_impossible"):
        values[name] = list(example.features.feature[name].int64_list.value)
    values["unique_ids"] = [unique_id]
    return input_pipeline.serialize_example(values)


def _convert_chunk_to_records(indexed_examples):
    """Worker: per example of a chunk, (truncated, split training records, features to log or None).

    Only bytes come back (no token lists or maps to pickle); the features themselves only
    for the first LOGGED_EXAMPLES examples, which the parent logs.
    """
    tokenizer, settings = _worker_state["tokenizer"], _worker_state["settings"]
    if isinstance(indexed_examples, range):  # indexes into the examples list the worker was forked with
        examples = _worker_state["examples"]
        indexed_examples = ((index, examples[index]) for index in indexed_examples)
    out = []
    for index, example in indexed_examples:
        features, truncated = convert_example_to_features(example, index, tokenizer, **settings)
        records = [_split_record(feature) for feature in features]
        out.append((truncated, records, features if index < LOGGED_EXAMPLES else None))
    return out


def _chunks(items, size):
    """Lists of `size` consecutive items (the last one shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _ordered_results(pool, function, items, in_flight):
    """pool.imap(function, items), with at most `in_flight` tasks submitted and not yet taken.

    pool.imap reads all of its input ahead and keeps every result its consumer has not taken
    yet: with a slow consumer (the model) memory would grow with the number of questions.
    """
    pending = collections.deque()
    for item in items:
        pending.append(pool.apply_async(function, (item,)))
        if len(pending) >= in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def stream_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length, is_training,
                    output_fn=None, num_workers=1, stats=None, progress=None):
    # 10 parameters: the original's convert_examples_to_features settings, plus workers, counters and progress.
    """Yields the windows of `examples` in order, numbered from 1000000000 (as the original).

    The first 20 examples' windows are logged as the original logs them. With
    `num_workers` > 1 the examples are converted in that many processes, in order; memory
    holds only the chunks in flight (two per worker, of 64 examples each).

    Args:
        output_fn: optional callable called with every feature (the original's API); the
            features are also yielded.
        stats: optional collections.Counter; counts "query_truncated" and "features".
        progress: optional callable called with the number of examples done.
    """
    stats = stats if stats is not None else collections.Counter()
    settings = dict(max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length,
                    is_training=is_training)
    pool = None
    if num_workers > 1:
        pool = _feature_pool(tokenizer, settings, num_workers)
        chunks = _ordered_results(pool, _convert_chunk, _chunks(enumerate(examples), 64), 2 * num_workers)
        results = (r for chunk in chunks for r in chunk)
    else:
        results = (convert_example_to_features(example, index, tokenizer, **settings)
                   for index, example in enumerate(examples))
    unique_id = FIRST_UNIQUE_ID
    try:
        for features, truncated in results:
            stats["query_truncated"] += int(truncated)
            for feature in features:
                feature.unique_id = unique_id
                unique_id += 1
                stats["features"] += 1
                if feature.example_index < LOGGED_EXAMPLES:
                    _log_feature(feature, is_training)
                if output_fn is not None:
                    output_fn(feature)
                yield feature
            if progress is not None:
                progress(1)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def convert_examples_to_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length, is_training,
                                 output_fn):
    """The original's conversion: calls `output_fn` with every window's InputFeatures, in order.

    Eager, as the original; `stream_features` is the same conversion as a generator.
    """
    for _ in stream_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length, is_training,
                             output_fn):
        pass


class FeatureWriter:
    """Writes InputFeatures to a TFRecord of tf.train.Examples (the train/eval.tf_record schema).

    As the original's, records go straight to `filename`; `num_features` counts them.
    """

    def __init__(self, filename, is_training):
        self.filename = filename
        self.is_training = is_training
        self.num_features = 0
        self._writer = tf.io.TFRecordWriter(filename)

    def process_feature(self, feature):
        self.num_features += 1
        self._writer.write(serialize_feature(feature, self.is_training))

    def close(self):
        self._writer.close()


def _feature_pool(tokenizer, settings, num_workers, examples=None):
    """Forked workers: they share the tokenizer's tables (and `examples`) without pickling them.

    They run only Python tokenization and protobuf serialization, never TensorFlow ops.
    The parent's objects are frozen out of the garbage collector while forking, so that
    the workers' collections do not touch (and copy) every page of the parent's heap.
    """
    gc.freeze()
    try:
        return multiprocessing.get_context("fork").Pool(num_workers, initializer=_init_feature_worker,
                                                        initargs=(tokenizer, settings, examples))
    finally:
        gc.unfreeze()


def training_records(examples, tokenizer, max_seq_length, doc_stride, max_query_length, num_workers=1, stats=None,
                     progress=None):
    # 8 parameters: the original's convert_examples_to_features settings, plus workers, counters and progress.
    """Yields the serialized training records (serialize_feature) of `examples`' windows, in order.

    The same bytes, logging and `stats` as serializing stream_features(...,
    is_training=True). With `num_workers` > 1 the workers serialize the records and send
    only their bytes; memory holds only the chunks in flight (two per worker, of 64
    examples each).
    """
    if num_workers <= 1:
        features = stream_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length,
                                                True, stats=stats, progress=progress)
        for feature in features:
            yield serialize_feature(feature, True)
        return
    stats = stats if stats is not None else collections.Counter()
    settings = dict(max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length,
                    is_training=True)
    if isinstance(examples, list):  # the workers inherit the list: only index ranges are sent
        pool = _feature_pool(tokenizer, settings, num_workers, examples)
        tasks = (range(start, min(start + 64, len(examples))) for start in range(0, len(examples), 64))
    else:
        pool = _feature_pool(tokenizer, settings, num_workers)
        tasks = _chunks(enumerate(examples), 64)
    unique_id = FIRST_UNIQUE_ID
    try:
        chunks = _ordered_results(pool, _convert_chunk_to_records, tasks, 2 * num_workers)
        for chunk in chunks:
            for truncated, records, logged in chunk:
                stats["query_truncated"] += int(truncated)
                stats["features"] += len(records)
                if logged is not None:
                    for offset, feature in enumerate(logged):
                        feature.unique_id = unique_id + offset
                        _log_feature(feature, True)
                for parts in records:
                    yield _join_record(parts, unique_id)
                    unique_id += 1
                if progress is not None:
                    progress(1)
    finally:
        pool.terminate()
        pool.join()


def serialize_feature(feature, is_training):
    """The original's tf.Example for a window (train.tf_record / eval.tf_record schema)."""
    values = collections.OrderedDict()
    values["unique_ids"] = [feature.unique_id]
    values["input_ids"] = feature.input_ids
    values["input_mask"] = feature.input_mask
    values["segment_ids"] = feature.segment_ids
    if is_training:
        values["start_positions"] = [feature.start_position]
        values["end_positions"] = [feature.end_position]
        values["is_impossible"] = [int(bool(feature.is_impossible))]
    return input_pipeline.serialize_example(values)


def feature_spec(max_seq_length, is_training):
    """The TFRecord schema the model reads (`is_impossible` is written, never read)."""
    spec = {
        "unique_ids": tf.io.FixedLenFeature([], tf.int64),
        "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
    }
    if is_training:
        spec["start_positions"] = tf.io.FixedLenFeature([], tf.int64)
        spec["end_positions"] = tf.io.FixedLenFeature([], tf.int64)
    return spec


# --- Training features, cached in output_dir --------------------------------------------------

def _file_signature(path):
    stat = tf.io.gfile.stat(path)
    return {"path": path, "bytes": stat.length, "mtime_nsec": stat.mtime_nsec}


def prepare_training_features(train_file, vocab_file, tokenizer, output_dir, max_seq_length, doc_stride,
                              max_query_length, version_2_with_negative, do_lower_case, num_workers=1):
    # 10 parameters: the files and the original's feature settings that decide whether train.tf_record can be reused.
    """Writes `output_dir/train.tf_record` once, or reuses it when made with the same inputs.

    Examples are pre-shuffled with random.Random(12345) before conversion, as the original.
    A `train.tf_record.json` beside the records remembers what they were made from and
    the counts, so a resumed run skips the conversion.

    Returns:
        dict with "num_examples" (questions kept: the original's count for num_train_steps),
        "num_features", "answer_not_found", "query_truncated", "path".
    """
    path = os.path.join(output_dir, "train.tf_record")
    made_from = dict(train_file=_file_signature(train_file), vocab_file=_file_signature(vocab_file),
                     do_lower_case=do_lower_case, max_seq_length=max_seq_length, doc_stride=doc_stride,
                     max_query_length=max_query_length, version_2_with_negative=version_2_with_negative)
    meta_path = path + ".json"
    if tf.io.gfile.exists(path) and tf.io.gfile.exists(meta_path):
        try:
            with tf.io.gfile.GFile(meta_path) as f:
                meta = json.load(f)
        except ValueError:
            meta = {}
        problem = input_pipeline.tfrecord_end_problem(path)
        if problem:
            logging.warning("Not reusing %s: it %s; converting the questions again", path, problem)
        elif meta.get("made_from") == made_from:
            counts = meta["counts"]
            logging.info("Reusing %s (%d features of %d questions)", path, counts["num_features"],
                         counts["num_examples"])
            return dict(counts, path=path)

    stats = collections.Counter()
    examples = read_squad_examples(train_file, True, version_2_with_negative, stats)
    random.Random(12345).shuffle(examples)
    progress = cli.ProgressLine("questions converted", total=len(examples))
    records = training_records(examples, tokenizer, max_seq_length, doc_stride, max_query_length,
                               num_workers=num_workers, stats=stats, progress=progress)
    num_features = input_pipeline.write_tfrecord(path, records)
    progress.close()
    counts = dict(num_examples=len(examples), num_features=num_features,
                  answer_not_found=stats["answer_not_found"], query_truncated=stats["query_truncated"])
    cli.write_text(meta_path, json.dumps(dict(made_from=made_from, counts=counts), indent=2) + "\n")
    return dict(counts, path=path)


# --- Model ------------------------------------------------------------------------------------

# The logit of a padding position under --real_length: exp() of it is 0 next to any real
# logit in float32, so a softmax over a padded window equals one over its real positions.
PADDING_LOGIT = -10000.0


class SquadModel(keras.layers.Layer):
    """BERT with the span head `cls/squad/output_weights` [2, H] and `cls/squad/output_bias` [2].

    With `mask_padding` (run_squad's --real_length) the padding positions get PADDING_LOGIT,
    so nothing computed depends on them and a batch gives the same span logits, loss and
    candidates at any length that holds its real windows. Without it, as the original, every
    position has its own logit.
    """

    def __init__(self, config, use_one_hot_embeddings=False, mask_padding=False, gradient_checkpointing=False,
                 **kwargs):
        super().__init__(name=kwargs.pop("name", "squad_model"), **kwargs)
        self.bert = modeling.BertModel(config, use_one_hot_embeddings=use_one_hot_embeddings,
                                       gradient_checkpointing=gradient_checkpointing)
        self.squad = modeling.SquadHead(config.hidden_size)
        self.mask_padding = mask_padding

    def call(self, features, training=False):
        """Returns float32 (start_logits [B, S], end_logits [B, S])."""
        outputs = self.bert(features["input_ids"], input_mask=features["input_mask"],
                            token_type_ids=features["segment_ids"], training=training)
        start_logits, end_logits = self.squad(outputs["sequence_output"])
        if self.mask_padding:
            real = tf.not_equal(features["input_mask"], 0)
            start_logits = tf.where(real, start_logits, PADDING_LOGIT)
            end_logits = tf.where(real, end_logits, PADDING_LOGIT)
        return start_logits, end_logits


def squad_training_loss(model, features, training):
    start_logits, end_logits = model(features, training=training)
    return modeling.squad_loss(start_logits, end_logits, features["start_positions"], features["end_positions"])


def squad_predictions(model, features):
    start_logits, end_logits = model(features, training=False)
    return {"unique_ids": features["unique_ids"], "start_logits": start_logits, "end_logits": end_logits}


# --- Post-processing: n-best answers ----------------------------------------------------------

RawResult = collections.namedtuple("RawResult", ["unique_id", "start_logits", "end_logits"])
_PrelimPrediction = collections.namedtuple("PrelimPrediction",
                                           ["feature_index", "start_index", "end_index", "start_logit", "end_logit"])
_NbestPrediction = collections.namedtuple("NbestPrediction", ["text", "start_logit", "end_logit"])


def _get_best_indexes(logits, n_best_size):
    """Indexes of the n largest logits, largest first; ties keep the lower index first."""
    return np.argsort(-np.asarray(logits, np.float64), kind="stable")[:n_best_size].tolist()


def _compute_softmax(scores):
    """Softmax over Python floats, summed in order (the original's arithmetic, bit for bit)."""
    if not scores:
        return []
    max_score = max(scores)
    exp_scores = [math.exp(score - max_score) for score in scores]
    total = 0.0
    for x in exp_scores:
        total += x
    return [x / total for x in exp_scores]


def _strip_spaces(text):
    """(text without spaces, {index in that text: index in `text`})."""
    chars, positions = [], {}
    for i, c in enumerate(text):
        if c != " ":
            positions[len(chars)] = i
            chars.append(c)
    return "".join(chars), positions


_basic_tokenizers = {}


def get_final_text(pred_text, orig_text, do_lower_case, verbose_logging=False):
    """Projects a normalised predicted answer back onto the original text.

    `pred_text` comes from WordPieces (lower-cased, accents stripped, punctuation split),
    `orig_text` is the original words it spans ("Steve Smith's" for "steve smith"). The
    original words are re-tokenized with BasicTokenizer; when both agree character for
    character once spaces are removed, the matching slice of `orig_text` is returned
    ("Steve Smith"); otherwise `orig_text` itself.
    """
    if do_lower_case not in _basic_tokenizers:
        _basic_tokenizers[do_lower_case] = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
    tok_text = " ".join(_basic_tokenizers[do_lower_case].tokenize(orig_text))

    start_position = tok_text.find(pred_text)
    if start_position == -1:
        if verbose_logging:
            logging.info("Unable to find text: '%s' in '%s'", pred_text, orig_text)
        return orig_text
    end_position = start_position + len(pred_text) - 1

    orig_ns_text, orig_ns_to_s = _strip_spaces(orig_text)
    tok_ns_text, tok_ns_to_s = _strip_spaces(tok_text)
    if len(orig_ns_text) != len(tok_ns_text):
        if verbose_logging:
            logging.info("Length not equal after stripping spaces: '%s' vs '%s'", orig_ns_text, tok_ns_text)
        return orig_text

    tok_s_to_ns = {s: ns for ns, s in tok_ns_to_s.items()}
    orig_start = orig_ns_to_s.get(tok_s_to_ns.get(start_position))
    if orig_start is None:
        if verbose_logging:
            logging.info("Couldn't map start position")
        return orig_text
    orig_end = orig_ns_to_s.get(tok_s_to_ns.get(end_position))
    if orig_end is None:
        if verbose_logging:
            logging.info("Couldn't map end position")
        return orig_text
    return orig_text[orig_start:orig_end + 1]


@dataclasses.dataclass(frozen=True)
class AnswerSettings:
    """How an answer is chosen from a question's window logits: the original's flags of the same
    names, and their defaults."""

    n_best_size: int = 20
    max_answer_length: int = 30
    do_lower_case: bool = True
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0
    verbose_logging: bool = False

    @classmethod
    def from_flags(cls, flag_values):
        """The settings that absl `flag_values` (run_squad.py's FLAGS) hold."""
        return cls(**{field.name: flag_values[field.name].value for field in dataclasses.fields(cls)})


def _prelim_predictions(features, results, settings):
    """Candidate spans of every window, best first, and (v2.0) the null answer's candidate.

    Returns (list of _PrelimPrediction sorted by start_logit + end_logit, the minimum null
    score over the windows (1000000 when not v2.0), the null candidate or None).
    """
    prelim = []
    score_null = 1000000  # above any real score: the minimum over windows replaces it
    null = _PrelimPrediction(0, 0, 0, 0, 0)
    for feature_index, (feature, result) in enumerate(zip(features, results)):
        start_logits = np.asarray(result.start_logits, np.float32).tolist()
        end_logits = np.asarray(result.end_logits, np.float32).tolist()
        if settings.version_2_with_negative and start_logits[0] + end_logits[0] < score_null:
            score_null = start_logits[0] + end_logits[0]
            null = _PrelimPrediction(feature_index, 0, 0, start_logits[0], end_logits[0])
        num_tokens = len(feature.tokens)
        doc_positions = feature.token_to_orig_map
        end_indexes = _get_best_indexes(end_logits, settings.n_best_size)
        for start_index in _get_best_indexes(start_logits, settings.n_best_size):
            # Spans must lie in this window's document pieces, start where the window has the
            # most context of all windows, and be at most max_answer_length pieces.
            if start_index >= num_tokens or start_index not in doc_positions:
                continue
            if not feature.token_is_max_context.get(start_index, False):
                continue
            for end_index in end_indexes:
                if end_index >= num_tokens or end_index not in doc_positions:
                    continue
                if end_index < start_index or end_index - start_index + 1 > settings.max_answer_length:
                    continue
                prelim.append(_PrelimPrediction(feature_index, start_index, end_index, start_logits[start_index],
                                                end_logits[end_index]))
    if settings.version_2_with_negative:
        prelim.append(null)
    prelim.sort(key=lambda p: p.start_logit + p.end_logit, reverse=True)
    return prelim, score_null, null if settings.version_2_with_negative else None


def _nbest_predictions(example, features, prelim, null, settings):
    """The n best distinct answer texts of the candidates (_NbestPrediction), best first.

    `null`: the null answer's candidate (v2.0), added if no candidate is the null answer.
    """
    seen, nbest = set(), []
    for pred in prelim:
        if len(nbest) >= settings.n_best_size:
            break
        if pred.start_index > 0:
            feature = features[pred.feature_index]
            tok_text = " ".join(feature.tokens[pred.start_index:pred.end_index + 1])
            tok_text = tok_text.replace(" ##", "").replace("##", "")  # undo WordPiece splits
            tok_text = " ".join(tok_text.strip().split())
            orig_start = feature.token_to_orig_map[pred.start_index]
            orig_end = feature.token_to_orig_map[pred.end_index]
            orig_text = " ".join(example.doc_tokens[orig_start:orig_end + 1])
            final_text = get_final_text(tok_text, orig_text, settings.do_lower_case, settings.verbose_logging)
            if final_text in seen:
                continue
        else:
            final_text = ""
        seen.add(final_text)
        nbest.append(_NbestPrediction(final_text, pred.start_logit, pred.end_logit))
    if null is not None and "" not in seen:
        nbest.append(_NbestPrediction("", null.start_logit, null.end_logit))
    if not nbest:  # no valid span at all (v1.1): the original's placeholder
        nbest.append(_NbestPrediction("empty", 0.0, 0.0))
    return nbest


def predict_example(example, features, results, settings):
    """The answer, n-best list and (v2.0) null score difference of one question.

    Args:
        example: SquadExample.
        features: its InputFeatures (windows), in order.
        results: RawResult for each feature (Python float or numpy float32 logits).
        settings: AnswerSettings.

    Returns:
        (answer text, n-best list of OrderedDict(text, probability, start_logit, end_logit),
        score_diff or None in v1.1).
    """
    prelim, score_null, null = _prelim_predictions(features, results, settings)
    nbest = _nbest_predictions(example, features, prelim, null, settings)
    probabilities = _compute_softmax([entry.start_logit + entry.end_logit for entry in nbest])
    nbest_json = []
    for entry, probability in zip(nbest, probabilities):
        output = collections.OrderedDict()
        output["text"] = entry.text
        output["probability"] = probability
        output["start_logit"] = entry.start_logit
        output["end_logit"] = entry.end_logit
        nbest_json.append(output)

    if not settings.version_2_with_negative:
        return nbest_json[0]["text"], nbest_json, None
    best_non_null = next((entry for entry in nbest if entry.text), None)
    if best_non_null is None:
        # Every n-best entry is the null answer (where the original raises). Nothing else
        # can be predicted; the difference is taken against 0.0, the score of the
        # original's "empty" placeholder.
        return "", nbest_json, score_null
    score_diff = score_null - best_non_null.start_logit - best_non_null.end_logit
    answer = "" if score_diff > settings.null_score_diff_threshold else best_non_null.text
    return answer, nbest_json, score_diff


def write_predictions(all_examples, all_features, all_results, n_best_size, max_answer_length, do_lower_case,
                      output_prediction_file, output_nbest_file, output_null_log_odds_file,
                      version_2_with_negative=False, null_score_diff_threshold=0.0, verbose_logging=False):
    # 12 parameters: the original's signature (its flags read here as keywords).
    """The original's write_predictions: all features and results given at once, in any order.

    The original's signature (its flags read here as keywords). See `write_streamed_predictions`,
    which this calls with the windows in example order.
    """
    result_by_id = {result.unique_id: result for result in all_results}
    windows = sorted(all_features, key=lambda feature: (feature.example_index, feature.doc_span_index))
    settings = AnswerSettings(n_best_size, max_answer_length, do_lower_case, version_2_with_negative,
                              null_score_diff_threshold, verbose_logging)
    return write_streamed_predictions(
        all_examples, ((feature, result_by_id[feature.unique_id]) for feature in windows), settings,
        output_prediction_file, output_nbest_file, output_null_log_odds_file)


def write_streamed_predictions(examples, window_results, settings, output_prediction_file, output_nbest_file,
                               output_null_log_odds_file, progress=None):
    """Writes predictions.json, nbest_predictions.json and (v2.0) null_odds.json as the original.

    Each question is answered, and its n-best list written, as soon as its last window's
    logits arrive, so only the windows of the question at hand are held. Each file is
    `json.dumps(obj, indent=4) + "\\n"`, keys in the order of the questions, written under a
    temporary name and renamed when complete.

    Args:
        examples: the SquadExamples, in order.
        window_results: iterable of (InputFeatures, RawResult), the windows of each example
            consecutive and the examples in order (as stream_features yields them).
        settings: AnswerSettings.
        progress: optional callable called with 1 for every question answered.

    Returns:
        (predictions {qas_id: text}, null_odds {qas_id: score_diff}, empty in v1.1).
    """
    logging.info("Writing predictions to: %s", output_prediction_file)
    logging.info("Writing nbest to: %s", output_nbest_file)
    predictions, null_odds = collections.OrderedDict(), collections.OrderedDict()

    def answer(example_index, features, results):
        example = examples[example_index]
        text, nbest_json, score_diff = predict_example(example, features, results, settings)
        predictions[example.qas_id] = text
        if settings.version_2_with_negative:
            null_odds[example.qas_id] = score_diff
        nbest_writer.add(example.qas_id, nbest_json)
        if progress is not None:
            progress(1)

    with _JsonObjectWriter(output_nbest_file) as nbest_writer:
        next_index = 0  # the first example not answered yet
        for example_index, windows in itertools.groupby(window_results, key=lambda fr: fr[0].example_index):
            if example_index < next_index:
                raise ValueError(f"the windows of example {example_index} are not consecutive or not in order")
            for skipped in range(next_index, example_index):  # no window at all: the original's "empty"
                answer(skipped, [], [])
            features, results = zip(*windows)
            answer(example_index, features, results)
            next_index = example_index + 1
        for skipped in range(next_index, len(examples)):
            answer(skipped, [], [])
    cli.write_text(output_prediction_file, json.dumps(predictions, indent=4) + "\n")
    if settings.version_2_with_negative:
        cli.write_text(output_null_log_odds_file, json.dumps(null_odds, indent=4) + "\n")
    return predictions, null_odds


class _JsonObjectWriter:
    """Streams {key: value, ...} to a file exactly as json.dumps(dict, indent=4) + "\\n" would.

    Entries are written as they come (the n-best lists of a large set need not all sit in
    memory) to a temporary file that replaces `path` only on success.
    """

    def __init__(self, path):
        self.path = path
        self.output = cli.atomic_output(path)
        self.keys = set()
        self.file = None

    def __enter__(self):
        self.file = tf.io.gfile.GFile(self.output.__enter__(), "w")
        return self

    def add(self, key, value):
        # A later duplicate replaces an earlier key in a dict; a stream cannot, so refuse.
        if key in self.keys:
            raise ValueError(f"question id {key} appears twice in the predict file")
        text = json.dumps({key: value}, indent=4)[2:-2]  # one entry, indented as inside the dict
        self.file.write(("{\n" if not self.keys else ",\n") + text)
        self.keys.add(key)

    def __exit__(self, error_type, error, traceback):
        try:
            if error_type is None:
                self.file.write("\n}\n" if self.keys else "{}\n")
            self.file.close()
        except BaseException as e:  # a failed final write or close: the output must not land
            error_type, error, traceback = type(e), e, e.__traceback__
            raise
        finally:
            self.output.__exit__(error_type, error, traceback)
        return False


# --- Prediction, streamed: windows to the model as they are made, answers as they complete --

def _window_arrays(features):
    """The model inputs of a list of windows: int32 arrays [B] and [B, S]."""
    return {"unique_ids": np.array([f.unique_id for f in features], np.int32),
            "input_ids": np.array([f.input_ids for f in features], np.int32),
            "input_mask": np.array([f.input_mask for f in features], np.int32),
            "segment_ids": np.array([f.segment_ids for f in features], np.int32)}


def predict_windows(strategy, model, features, batch_size, max_seq_length, record_writer=None, length=None):
    """Runs the model on windows as they come; yields (InputFeatures, RawResult) in order.

    `features` is consumed a group at a time by a tf.data generator (on tf.data's thread, so
    feature conversion overlaps the model), and a window is held only from its group until
    its logits are yielded: memory does not grow with the number of questions. An error
    while making the windows is raised here, as it was raised.

    Args:
        features: iterable of InputFeatures (prediction windows).
        batch_size: windows per model call (at full length).
        record_writer: optional tf.io.TFRecordWriter; each window's tf.Example (the
            original's eval.tf_record) is written to it.
        length: optional input_pipeline.RealLength (with a padding-masked model, --real_length):
            groups of input_pipeline.GROUP_WINDOW_BATCHES batches go to the model as
            input_pipeline.length_grouped_batches makes them, each batch cut to its longest
            window; the logits (of the batch's length) come back in input order.
    """
    waiting = collections.deque()  # windows given to the model (input order), not yet yielded
    failure = []
    # Groups of 32 batches, not the classifier's 128: a SQuAD window holds its tokens and maps
    # (tens of KB) until its logits are back, and the groups in flight hold them all.
    group_size = batch_size * (input_pipeline.GROUP_WINDOW_BATCHES if length is not None else 1)

    def groups():
        issued = 0
        try:
            for group in _chunks(features, group_size):
                arrays = _window_arrays(group)
                for feature in group:
                    if record_writer is not None:
                        record_writer.write(serialize_feature(feature, False))
                    feature.input_ids = feature.input_mask = feature.segment_ids = None  # in `arrays` now
                if length is not None:
                    arrays[input_pipeline.EXAMPLE_POSITION] = np.arange(issued, issued + len(group), dtype=np.int64)
                issued += len(group)
                waiting.extend(group)  # before the model can see them
                yield arrays
        except Exception as e:  # re-raised below, outside tf.data
            failure.append(e)

    dataset = tf.data.Dataset.from_generator(groups, output_signature=_window_signature(max_seq_length, length))
    # Either way the generator runs ahead on tf.data's thread: length_grouped_batches prefetches.
    dataset = (input_pipeline.length_grouped_batches(dataset, batch_size, length) if length is not None
               else dataset.prefetch(2))
    for outputs in training.predict(strategy, model, squad_predictions, dataset):
        for unique_id, start_logits, end_logits in zip(outputs["unique_ids"], outputs["start_logits"],
                                                       outputs["end_logits"]):
            feature = waiting.popleft()
            if feature.unique_id != unique_id:
                raise RuntimeError(f"prediction lost track of windows: {unique_id} came for {feature.unique_id}")
            yield feature, RawResult(int(unique_id), start_logits, end_logits)
    if failure:
        raise failure[0]
    if waiting:
        raise RuntimeError(f"prediction lost track of windows: {len(waiting)} without logits")


def _window_signature(max_seq_length, length):
    signature = {name: tf.TensorSpec([None, max_seq_length], tf.int32)
                 for name in ("input_ids", "input_mask", "segment_ids")}
    signature["unique_ids"] = tf.TensorSpec([None], tf.int32)
    if length is not None:
        signature[input_pipeline.EXAMPLE_POSITION] = tf.TensorSpec([None], tf.int64)
    return signature


def predict_and_write(strategy, model, examples, features, output_dir, max_seq_length, predict_batch_size,
                      settings, progress=None, write_records=True, length=None):
    # 11 parameters: the model side (strategy, model, batch size, length) and the answer side
    # (settings) meet here, the one place the streamed job is put together.
    """The prediction job: windows -> model -> answers, streamed; files in `output_dir`.

    Writes eval.tf_record (with `write_records`; the original's record of the windows),
    predictions.json, nbest_predictions.json and (v2.0) null_odds.json, each under a
    temporary name until complete.

    Args:
        examples: the SquadExamples, in order.
        features: iterable of their InputFeatures in order, typically the generator
            stream_features(examples, ...): windows are made, run and
            answered a batch at a time.
        settings: AnswerSettings.
        length: optional input_pipeline.RealLength for predict_windows (--real_length).

    Returns:
        (predictions {qas_id: text}, null_odds {qas_id: score_diff}, number of windows).
    """
    counter = collections.Counter()

    def counted(window_results):
        for window, result in window_results:
            counter["windows"] += 1
            if counter["windows"] % 1000 == 0:
                logging.info("Processing example: %d", counter["windows"])
            yield window, result

    record_path = os.path.join(output_dir, "eval.tf_record")
    with contextlib.ExitStack() as stack:
        writer = None
        if write_records:
            writer = stack.enter_context(tf.io.TFRecordWriter(stack.enter_context(cli.atomic_output(record_path))))
        windows = predict_windows(strategy, model, features, predict_batch_size, max_seq_length, writer, length)
        predictions, null_odds = write_streamed_predictions(
            examples, counted(windows), settings, os.path.join(output_dir, "predictions.json"),
            os.path.join(output_dir, "nbest_predictions.json"), os.path.join(output_dir, "null_odds.json"),
            progress)
    return predictions, null_odds, counter["windows"]


# --- Evaluation: the official SQuAD v1.1 and v2.0 rules ---------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text):
    """Lower case, drop ASCII punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1(prediction_tokens, gold_tokens):
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def f1_score_v1(prediction, gold):
    """SQuAD v1.1 token F1 (an empty side scores 0)."""
    return _f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def exact_match_score(prediction, gold):
    return normalize_answer(prediction) == normalize_answer(gold)


def f1_score_v2(prediction, gold):
    """SQuAD v2.0 token F1: when either side is empty, 1 if both are, else 0."""
    prediction_tokens = normalize_answer(prediction).split() if prediction else []
    gold_tokens = normalize_answer(gold).split() if gold else []
    if not prediction_tokens or not gold_tokens:
        return int(prediction_tokens == gold_tokens)
    return _f1(prediction_tokens, gold_tokens)


def evaluate_v1(gold_answers, predictions):
    """evaluate-v1.1.py: {"exact_match", "f1"} in percent over every question of `gold_answers`.

    Args:
        gold_answers: OrderedDict {qas_id: [answer texts]} (at least one per question).
        predictions: {qas_id: text}; a missing question scores 0.
    """
    exact = f1 = 0.0
    for qas_id, golds in gold_answers.items():
        if qas_id not in predictions:
            logging.warning("Unanswered question %s will receive score 0.", qas_id)
            continue
        prediction = predictions[qas_id]
        exact += max(exact_match_score(prediction, gold) for gold in golds)
        f1 += max(f1_score_v1(prediction, gold) for gold in golds)
    total = len(gold_answers)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def evaluate_v2(gold_answers, predictions, null_odds, na_prob_thresh=1.0):
    """evaluate-v2.0.py with --na-prob-file=null_odds.json (and its default --na-prob-thresh 1.0).

    Args:
        gold_answers: OrderedDict {qas_id: [answer texts]}, empty for unanswerable questions.
        predictions: {qas_id: text}.
        null_odds: {qas_id: score_diff}, the no-answer probability of the official script.

    Returns:
        OrderedDict exact, f1, total, HasAns_*/NoAns_* (when present), best_exact,
        best_exact_thresh, best_f1, best_f1_thresh.
    """
    has_answer = {qas_id: bool(golds) for qas_id, golds in gold_answers.items()}
    exact_raw, f1_raw = {}, {}
    for qas_id, golds in gold_answers.items():
        golds = [gold for gold in golds if normalize_answer(gold)] or [""]
        if qas_id not in predictions:
            logging.warning("Missing prediction for %s", qas_id)
            continue
        prediction = predictions[qas_id]
        exact_raw[qas_id] = max(int(normalize_answer(gold) == normalize_answer(prediction)) for gold in golds)
        f1_raw[qas_id] = max(f1_score_v2(prediction, gold) for gold in golds)
    na_probs = {qas_id: null_odds.get(qas_id, 0.0) for qas_id in gold_answers}

    def thresholded(scores):
        return {qas_id: float(not has_answer[qas_id]) if na_probs[qas_id] > na_prob_thresh else score
                for qas_id, score in scores.items()}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)

    def summary(qas_ids, prefix=""):
        total = len(qas_ids)
        return [(prefix + "exact", 100.0 * sum(exact[k] for k in qas_ids) / total),
                (prefix + "f1", 100.0 * sum(f1[k] for k in qas_ids) / total), (prefix + "total", total)]

    results = collections.OrderedDict(summary(list(exact)))
    has_ids = [k for k in gold_answers if has_answer[k]]
    no_ids = [k for k in gold_answers if not has_answer[k]]
    if has_ids:
        results.update(summary(has_ids, "HasAns_"))
    if no_ids:
        results.update(summary(no_ids, "NoAns_"))
    for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
        best, threshold = _best_threshold(predictions, raw, na_probs, has_answer)
        results[f"best_{name}"] = best
        results[f"best_{name}_thresh"] = threshold
    return results


def _best_threshold(predictions, scores, na_probs, has_answer):
    """The no-answer threshold that maximises the score (official find_best_thresh)."""
    score = best_score = sum(1 for k in has_answer if not has_answer[k])
    best_threshold = 0.0
    for qas_id in sorted(na_probs, key=lambda k: na_probs[k]):
        if qas_id not in scores:
            continue
        if has_answer[qas_id]:
            score += scores[qas_id]
        elif predictions[qas_id]:
            score -= 1
        if score > best_score:
            best_score, best_threshold = score, na_probs[qas_id]
    return 100.0 * best_score / len(scores), best_threshold


def gold_answers_of(examples, version_2_with_negative):
    """{qas_id: gold texts} when every question carries answers (v1.1: at least one), else None."""
    gold = collections.OrderedDict()
    for example in examples:
        if example.answers is None or (not version_2_with_negative and not example.answers):
            return None
        gold[example.qas_id] = example.answers
    return gold or None


# --- The script -------------------------------------------------------------------------------

def validate_flags_or_throw(bert_config):
    tokenization.validate_case_matches_checkpoint(FLAGS.do_lower_case, FLAGS.init_checkpoint)
    if not FLAGS.do_train and not FLAGS.do_predict:
        raise ValueError("At least one of `do_train` or `do_predict` must be True.")
    if FLAGS.do_train and not FLAGS.train_file:
        raise ValueError("If `do_train` is True, then `train_file` must be specified.")
    if FLAGS.do_predict and not FLAGS.predict_file:
        raise ValueError("If `do_predict` is True, then `predict_file` must be specified.")
    modeling.check_max_seq_length(bert_config, FLAGS.max_seq_length)
    if FLAGS.max_seq_length <= FLAGS.max_query_length + 3:
        raise ValueError(f"--max_seq_length={FLAGS.max_seq_length} leaves no room for the document: it must be "
                         f"above --max_query_length + 3 = {FLAGS.max_query_length + 3}")
    for name in ("doc_stride", "max_query_length", "num_workers", "n_best_size", "max_answer_length",
                 "train_batch_size", "predict_batch_size"):
        if getattr(FLAGS, name) < 1:
            raise ValueError(f"--{name}={getattr(FLAGS, name)} must be at least 1")
    max_tokens_for_doc = FLAGS.max_seq_length - FLAGS.max_query_length - 3
    if FLAGS.doc_stride > max_tokens_for_doc:
        raise ValueError(f"--doc_stride={FLAGS.doc_stride} is above the {max_tokens_for_doc} document tokens of a "
                         f"window (--max_seq_length - --max_query_length - 3): the windows would skip text; use "
                         f"--doc_stride={max_tokens_for_doc} or less")
    if FLAGS.do_train:
        cli.validate_run_flags(learning_rate=FLAGS.learning_rate, num_train_epochs=FLAGS.num_train_epochs,
                                    warmup_proportion=FLAGS.warmup_proportion)
    for name in ("train_file", "predict_file", "vocab_file"):
        path = getattr(FLAGS, name)
        if path and not tf.io.gfile.exists(path):
            raise ValueError(f"--{name}={path}: no such file")


def _log_counts(what, stats, max_query_length):
    if stats.get("answer_not_found"):
        logging.warning("%s: %d training question(s) skipped: the answer text is not at its answer_start "
                        "('Could not find answer' above)", what, stats["answer_not_found"])
    if stats.get("query_truncated"):
        logging.warning("%s: %d question(s) longer than --max_query_length=%d WordPieces were truncated", what,
                        stats["query_truncated"], max_query_length)


def run_training(strategy, engine_config, model, counts, length):
    # Steps count questions, not windows, as the original.
    num_train_steps, num_warmup_steps = cli.epoch_steps(
        counts["num_examples"], FLAGS.train_batch_size, FLAGS.num_train_epochs, FLAGS.warmup_proportion,
        unit="questions")
    logging.info("  Num orig examples = %d", counts["num_examples"])
    logging.info("  Num split examples = %d", counts["num_features"])
    _log_counts(FLAGS.train_file, counts, FLAGS.max_query_length)
    name_to_features = feature_spec(FLAGS.max_seq_length, is_training=True)
    dataset_fn = input_pipeline.tfrecord_dataset_fn([counts["path"]], name_to_features, engine_config.data_seed,
                                              length=length)
    training.train(strategy, engine_config, model, squad_training_loss, dataset_fn, FLAGS.output_dir, num_train_steps,
                   num_warmup_steps, FLAGS.learning_rate, FLAGS.train_batch_size,
                   init_checkpoint=FLAGS.init_checkpoint)


def read_prediction_examples(predict_file, version_2_with_negative, stats):
    """The questions of --predict_file; their ids must be unique (they key predictions.json)."""
    examples = read_squad_examples(predict_file, False, version_2_with_negative, stats)
    if not examples:
        raise ValueError(f"--predict_file={predict_file} holds no questions: nothing to predict")
    seen = set()
    for example in examples:
        if example.qas_id in seen:
            raise ValueError(f"{predict_file}: question id {example.qas_id} appears twice; ids must be "
                             f"unique (they key predictions.json)")
        seen.add(example.qas_id)
    return examples


def _first_item_made(iterator):
    """`iterator` with its first item already made (a generator's setup runs now)."""
    first = list(itertools.islice(iterator, 1))
    return itertools.chain(first, iterator)


def run_prediction(strategy, model, examples, features, stats, length):
    if not FLAGS.do_train:
        training.restore_for_inference(model, FLAGS.output_dir, FLAGS.init_checkpoint)
    logging.info("***** Running predictions *****")
    logging.info("  Num orig examples = %d", len(examples))
    logging.info("  Batch size = %d", FLAGS.predict_batch_size)
    progress = cli.ProgressLine("questions predicted", total=len(examples))
    predictions, null_odds, num_features = predict_and_write(
        strategy, model, examples, features, FLAGS.output_dir, FLAGS.max_seq_length, FLAGS.predict_batch_size,
        AnswerSettings.from_flags(FLAGS), progress, length=length)
    progress.close()
    logging.info("  Num split examples = %d", num_features)
    _log_counts(FLAGS.predict_file, stats, FLAGS.max_query_length)

    gold = gold_answers_of(examples, FLAGS.version_2_with_negative)
    if gold is None:
        logging.info("%s carries no answers: no evaluation", FLAGS.predict_file)
        return
    if FLAGS.version_2_with_negative:
        scores = evaluate_v2(gold, predictions, null_odds)
    else:
        scores = evaluate_v1(gold, predictions)
    cli.write_text(os.path.join(FLAGS.output_dir, "eval_results.json"), json.dumps(scores, indent=4) + "\n")
    logging.info("***** Eval results (official SQuAD %s rules) *****",
                 "v2.0" if FLAGS.version_2_with_negative else "v1.1")
    for key, value in scores.items():
        logging.info("  %s = %s", key, value)
    print(json.dumps(scores))


def main(_):
    logging.set_verbosity(logging.INFO)
    bert_config = modeling.BertConfig.from_json_file(FLAGS.bert_config_file)
    validate_flags_or_throw(bert_config)
    tokenizer = tokenization.FullTokenizer(vocab_file=FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case)
    tokenization.check_special_tokens(tokenizer.vocab, FLAGS.vocab_file, tokenization.TASK_TOKENS)
    modeling.check_vocab_size(bert_config, len(tokenizer.vocab), FLAGS.vocab_file)
    engine_config = training.EngineConfig.from_flags(FLAGS)
    train_counts = examples = features = None
    predict_stats = collections.Counter()
    if FLAGS.do_predict:  # read before anything is written: a bad file leaves output_dir as it was
        examples = read_prediction_examples(FLAGS.predict_file, FLAGS.version_2_with_negative, predict_stats)
    training.check_start_checkpoint(FLAGS.output_dir, FLAGS.init_checkpoint, bert_config)
    training.ensure_output_dir(FLAGS.output_dir)
    # Features first: the conversion workers fork before TensorFlow's runtime starts.
    if FLAGS.do_train:
        train_counts = prepare_training_features(
            FLAGS.train_file, FLAGS.vocab_file, tokenizer, FLAGS.output_dir, FLAGS.max_seq_length, FLAGS.doc_stride,
            FLAGS.max_query_length, FLAGS.version_2_with_negative, FLAGS.do_lower_case, FLAGS.num_workers)
    if FLAGS.do_predict:
        # The prediction windows are made while the model runs; starting the generator forks
        # its workers now.
        features = _first_item_made(stream_features(
            examples, tokenizer, FLAGS.max_seq_length, FLAGS.doc_stride, FLAGS.max_query_length, False,
            num_workers=FLAGS.num_workers, stats=predict_stats))

    strategy = training.start(engine_config)
    with strategy.scope():
        model = SquadModel(bert_config, use_one_hot_embeddings=FLAGS.use_tpu, mask_padding=FLAGS.real_length,
                           gradient_checkpointing=engine_config.gradient_checkpointing)
    # Unlike the classifier, batches stay at max_seq_length unless --real_length: the
    # original's span loss and each window's n-best candidates cover every position, padding
    # included, so cutting the padding changes the training run and the answers. With
    # --real_length the model masks the padding out and the cut changes nothing.
    length = input_pipeline.real_length(engine_config, FLAGS.max_seq_length) if FLAGS.real_length else None
    if FLAGS.do_train:
        run_training(strategy, engine_config, model, train_counts, length)
    if FLAGS.do_predict:
        run_prediction(strategy, model, examples, features, predict_stats, length)


def __getattr__(name):
    """The original's TF1-only names end here with a one-line pointer to their replacement."""
    import porting  # only when a name is missing: the module's own imports stay as they are
    raise porting.missing_name(__name__, name)


if __name__ == "__main__":
    define_flags()
    cli.run(main, "run_squad.py", ["vocab_file", "bert_config_file", "output_dir"])
