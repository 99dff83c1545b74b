"""The engine's training input: each worker reads its share, and a resume restores the input
position saved with the checkpoint instead of reading the consumed records again."""

import os

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline
import training

SPEC = {"value": tf.io.FixedLenFeature([1], tf.int64)}


def write_files(directory, files, records_per_file):
    """`files` TFRecord files; record `value` = file * 1000 + index (unique, tells its file)."""
    paths = []
    for f in range(files):
        path = os.path.join(directory, f"part-{f}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(records_per_file):
                example = tf.train.Example()
                example.features.feature["value"].int64_list.value.append(f * 1000 + i)
                writer.write(example.SerializeToString())
        paths.append(path)
    return paths


def values(dataset, batches):
    return [batch["value"].numpy().ravel().tolist() for batch in dataset.take(batches)]


def context(pipelines, index, replicas=None):
    return tf.distribute.InputContext(pipelines, index, replicas or pipelines)


def test_with_enough_files_each_worker_reads_only_its_own_files(tmp_path):
    paths = write_files(str(tmp_path), files=4, records_per_file=6)
    seen = []
    for index in range(2):
        dataset = input_pipeline.training_dataset(paths, SPEC, batch_size=3, seed=1, input_context=context(2, index))
        stream = sum(values(dataset, batches=40), [])  # 10 passes over its 2 files
        assert {v // 1000 for v in stream} == {index, index + 2}  # files index::2, nothing else
        seen += stream
    # Together the workers read every record, each as often as the others.
    counts = np.bincount([v // 1000 * 6 + v % 1000 for v in seen])
    assert len(counts) == 24 and counts.min() >= 7 and counts.max() <= 13


def test_with_fewer_files_than_workers_global_batches_equal_one_devices(tmp_path):
    paths = write_files(str(tmp_path), files=1, records_per_file=50)
    one = values(input_pipeline.training_dataset(paths, SPEC, batch_size=4, seed=3), batches=5)
    pipelines = [values(input_pipeline.training_dataset(paths, SPEC, batch_size=2, seed=3, input_context=context(2, i)),
                        batches=5) for i in range(2)]
    for step in range(5):
        assert sorted(pipelines[0][step] + pipelines[1][step]) == sorted(one[step])


class RecordingDatasetFn:
    """A runner's dataset_fn over `paths` that records the skip_examples it was asked for."""

    def __init__(self, paths):
        self.paths, self.skips = paths, []

    def __call__(self, input_context, batch_size, skip_examples):
        self.skips.append(skip_examples)
        return input_pipeline.training_dataset(self.paths, SPEC, batch_size, seed=5, skip_examples=skip_examples,
                                         input_context=input_context)


def take(batches, count):
    return [batches.next_batch()["value"].numpy().ravel().tolist() for _ in range(count)]


def test_resume_restores_the_saved_position_without_reading_consumed_records(tmp_path):
    paths = write_files(str(tmp_path), files=2, records_per_file=40)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    output_dir = str(tmp_path / "out")
    uninterrupted = take(training.TrainingInput(strategy, RecordingDatasetFn(paths), 4, 4, output_dir, 0), 9)

    first = training.TrainingInput(strategy, RecordingDatasetFn(paths), 4, 4, output_dir, 0)
    assert take(first, 6) == uninterrupted[:6]
    first.save_position(6)
    dataset_fn = RecordingDatasetFn(paths)
    with pytest.MonkeyPatch.context() as patch:
        logged = []
        patch.setattr(training.logging, "info", lambda message, *args: logged.append(message % args))
        resumed = training.TrainingInput(strategy, dataset_fn, 4, 4, output_dir, 6)
    assert dataset_fn.skips == [0]  # nothing read again
    assert any("Input position restored" in line for line in logged)
    assert take(resumed, 3) == uninterrupted[6:]


def test_resume_without_a_saved_position_continues_from_the_records_consumed(tmp_path):
    paths = write_files(str(tmp_path), files=1, records_per_file=40)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    uninterrupted = take(training.TrainingInput(strategy, RecordingDatasetFn(paths), 4, 4, str(tmp_path), 0), 5)
    dataset_fn = RecordingDatasetFn(paths)
    resumed = training.TrainingInput(strategy, dataset_fn, 4, 4, str(tmp_path / "elsewhere"), 3)
    assert dataset_fn.skips == [12]
    assert take(resumed, 2) == uninterrupted[3:]


def test_resume_with_another_worker_count_reshards_and_says_so(tmp_path):
    paths = write_files(str(tmp_path), files=4, records_per_file=10)
    output_dir = str(tmp_path / "out")
    position = training.input_position_prefix(output_dir, 7, 0, 2) + ".index"
    os.makedirs(os.path.dirname(position))
    open(position, "w").close()  # as if two workers had saved step 7
    warnings = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.logging, "warning", lambda message, *args: warnings.append(message % args))
        resumed = training.TrainingInput(tf.distribute.OneDeviceStrategy("/cpu:0"), RecordingDatasetFn(paths), 4, 4,
                                         output_dir, 7)
    assert warnings == ["Step 7 was saved by 2 input pipeline(s) and this run has 1: continuing with a re-sharded "
                        "input stream"]
    assert len(take(resumed, 2)) == 2


def test_per_worker_files_after_a_lost_position_start_a_fresh_reshuffled_pass(tmp_path):
    paths = write_files(str(tmp_path), files=4, records_per_file=6)
    fresh = input_pipeline.training_dataset(paths, SPEC, 3, seed=1, input_context=context(2, 0))
    resumed = input_pipeline.training_dataset(paths, SPEC, 3, seed=1, skip_examples=30, input_context=context(2, 0))
    # No skip through the stream (its positions depend on the worker count): the same files,
    # another order.
    first, second = sum(values(fresh, 8), []), sum(values(resumed, 8), [])
    assert {v // 1000 for v in first} == {v // 1000 for v in second} == {0, 2}
    assert first != second
