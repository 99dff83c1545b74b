"""Command-line plumbing every script shares: one-line errors, whole outputs, a progress line.

A user's mistake (a bad flag, a missing file, bad data) ends a script with one line,
`SCRIPT: error: ...`, and exit code 1, never a traceback; an output appears whole under
its name or not at all (`atomic_output`), and what killed runs left is cleaned; long data
jobs report progress. Imports nothing of the project, and TensorFlow only when asked
(`import_tensorflow`, remote paths), so light scripts stay light.
"""

import contextlib
import errno
import glob
import math
import os
import re
import shutil
import sys
import time
import uuid

from absl import app, flags, logging

# Notices TensorFlow prints while it loads (twice: two libraries), before any flag can silence
# them: the pre-init warning of absl, oneDNN, no CUDA driver, the CPU instruction set.
_STARTUP_NOTICE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_executor|cuda_dnn|cuda_fft|cuda_blas)"
    r"\.cc:\d+\] .*"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)$")


def import_tensorflow():
    """Imports and returns TensorFlow, with its known start-up notices kept off stderr.

    Its C++ side writes them to file descriptor 2 before any setting applies; they are
    captured there during the import, and every other line (a real import failure, a
    warning we do not know) is written back. Imports once; later calls return the module.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    import tempfile
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not _STARTUP_NOTICE.match(line.rstrip("\n")):
                    sys.stderr.write(line)
            sys.stderr.flush()
    return tensorflow


def run(main, script_name, required_flags=()):
    """Parses the flags and runs an absl `main`; a user's mistake is one line and exit code 1.

    Flag errors (a missing required flag, an unknown flag, a bad value) and ValueError,
    OSError or TensorFlow runtime errors raised by `main` are reported as
    `script_name: error: <one line>`; anything else is a bug and keeps its traceback.
    """
    for name in required_flags:
        flags.mark_flag_as_required(name)

    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            # absl reports each missing required flag on a line of its own.
            _fail(script_name, "; ".join(line.strip() for line in str(e).splitlines() if line.strip()))

    try:
        app.run(main, flags_parser=parse_flags)
    except Exception as e:  # pylint: disable=broad-except
        if not _is_user_error(e):
            raise
        remove_created_directories()
        _fail(script_name, describe_error(e))


def _fail(script_name, message):
    sys.stderr.write(f"{script_name}: error: {message}\n")
    sys.exit(1)


def _is_op_error(error):
    tf = sys.modules.get("tensorflow")  # only a script that uses TensorFlow can raise its errors
    return tf is not None and isinstance(error, tf.errors.OpError)


def _is_storage_error(error):
    """An error of a file-format library about the file system (safetensors: a full disk, ...)."""
    return type(error).__module__.startswith("safetensors") and "I/O error" in str(error)


def _is_user_error(error):
    return isinstance(error, (ValueError, OSError)) or _is_op_error(error) or _is_storage_error(error)


def describe_error(error):
    """One line for a user error: an OSError as 'path: reason', a TF error without its trace."""
    if _is_op_error(error):
        return describe_op_error(error)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    if _is_storage_error(error):
        return re.sub(r"^Error while \w+: I/O error: ", "", str(error).strip().splitlines()[0])
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def expand_input_files(input_file, flag_name="--input_file", files_only=False, unique=False):
    """Comma list of globs -> files, in the given order (sorted within one glob).

    A glob matching nothing, or an empty list, is an error naming the flag. Remote
    patterns (gs://...) go through tf.io.gfile, imported only for them.

    Args:
        files_only: local matches are only files and pipes (/dev/stdin, <(...)); a
            directory given alone is an error saying to name files in it.
        unique: each file once, where it first matches.
    """
    files = []
    for pattern in input_file.split(","):
        pattern = pattern.strip()
        if not pattern:
            continue
        if "://" in pattern:
            matches = sorted(_gfile().glob(pattern))
        else:
            matches = sorted(glob.glob(pattern))
            if files_only:
                matches = [path for path in matches if os.path.isfile(path) or readable_once(path)]
                if not matches and os.path.isdir(pattern):
                    raise ValueError(f"{flag_name}: {pattern} is a directory; give files or a glob such as "
                                     f"{os.path.join(pattern, '*.txt')}")
        # A killed run's half-written output under a temporary name is never an input.
        matches = [path for path in matches if not is_temp_name(path)]
        if not matches:
            raise ValueError(f"{flag_name}: no file matches {pattern}")
        files.extend(matches)
    if unique:
        files = list(dict.fromkeys(files))
    if not files:
        raise ValueError(f"{flag_name} is empty")
    return files


def describe_op_error(error):
    """One line saying what a TensorFlow runtime error is about, without its graph trace.

    Errors raised while reading TFRecords (a file that is not one, records of another
    length) get a hint at the usual cause.
    """
    lines = []
    for line in (error.message or "").splitlines():
        line = line.strip()
        if (not line or line.startswith(("Graph execution error", "Detected at node", "File ", "<stack traces",
                                         "[[")) or line.endswith(":") and "(most recent call last)" in line):
            continue
        lines.append(line)
    text = lines[0] if lines else type(error).__name__
    text = re.sub(r"^Error in user-defined function .*?(Key: |assertion failed: |$)", r"\1", text)  # tf.data's
    text = re.sub(r"^assertion failed: \[(.*?)\] \[(.*?)\]$", r"\1 \2", text)  # a pipeline's own check
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)  # eager ops' wrapper name
    text = re.sub(r"\s*\[\[.*$|\s*\[Op:.*$", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    if type(error).__name__ == "DataLossError" and "TFRecord" not in text:
        text += " (is the input a TFRecord file?)"
    elif ("Number of" in text and "values != expected" in text) or "slice was not parsed" in text:
        text += (" (the records were written with another --max_seq_length or --max_predictions_per_seq "
                 "than this run's)")
    return text


# --- Outputs that appear whole or not at all ----------------------------------------------

# `NAME.tmp-PID-RANDOM` (and the older `NAME.tmp-PID`): a file being written by process PID.
_TEMP_SUFFIX = re.compile(r"\.tmp-(\d+)(?:-[0-9a-f]+)?$")
# `PREFIX_temp_PID_HEX` (older: `PREFIX_temp_HEX`): modeling.save_checkpoint's bundle being written.
_CHECKPOINT_TEMP = re.compile(r"_temp_(?:(\d+)_)?[0-9a-f]{32}$")


def temp_name(path):
    """A temporary name beside `path`, unique to this process and this call."""
    return f"{path.rstrip('/')}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def is_temp_name(path):
    """Whether `path` is the temporary name of an output being written (or left by a killed run)."""
    name = os.path.basename(path.rstrip("/"))
    return bool(_TEMP_SUFFIX.search(name) or _CHECKPOINT_TEMP.search(name))


def _gfile():
    return import_tensorflow().io.gfile


def open_input(path, mode="rb"):
    """Opens an input file for reading: local, or any tf.io.gfile scheme (gs://, ...).

    Local paths go through Python's own open(): a pipe or /dev/stdin reads as a stream
    (GFile reads nothing from one), and TensorFlow is imported only for remote paths.
    """
    return _gfile().GFile(path, mode) if "://" in path else open(path, mode)


def input_size(path):
    """Bytes in an input file, local or remote; 0 for a pipe, whose size is not known."""
    if "://" in path:
        return _gfile().stat(path).length
    return 0 if readable_once(path) else os.path.getsize(path)


def _remove(path):
    if "://" in path:
        gfile = _gfile()
        if gfile.isdir(path):
            gfile.rmtree(path)
        elif gfile.exists(path):
            gfile.remove(path)
    elif os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_output(path, named=False):
    """Yields a temporary name to write `path` under; it becomes `path` on success.

    On any error (or interrupt) the temporary file is removed and `path` keeps what it
    held before, so a reader never sees a half-written output under its final name.
    A local file is written as an unnamed file of its directory (Linux O_TMPFILE: the name
    yielded is /proc/self/fd/N), linked in under `path` at the end: a killed run leaves no
    name behind for a glob to see. It is a named temporary file beside `path`, renamed,
    elsewhere (another OS or file system, a remote path) and with `named` (a directory, or a
    library that writes its own temporary file next to the one it is given: safetensors, h5py).
    Two outputs of one process never share a temporary name.
    """
    remove_stale_temps(path)
    unnamed = None if named or "://" in path else _unnamed_file(path)
    if unnamed is not None:
        try:
            yield f"/proc/self/fd/{unnamed}"
            _link_unnamed(unnamed, path)
        finally:
            os.close(unnamed)
        return
    temp = temp_name(path)
    try:
        yield temp
        if "://" in path:
            _gfile().rename(temp, path, overwrite=True)
        else:
            os.replace(temp, path)
    finally:
        _remove(temp)


def _unnamed_file(path):
    """A descriptor of a new unnamed file in `path`'s directory (O_TMPFILE), or None where the OS or
    the file system has none (the caller then writes a named temporary file)."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    umask = os.umask(0)
    os.umask(umask)
    try:
        return os.open(os.path.dirname(os.path.abspath(path)), flag | os.O_WRONLY, 0o666 & ~umask)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None  # no O_TMPFILE here; ENOENT: a missing directory, which the named path reports
        raise


def _link_unnamed(fd, path):
    """Gives the unnamed file `fd` the name `path`, replacing what `path` was, in one step for readers."""
    source = f"/proc/self/fd/{fd}"
    # With a dst_dir_fd, os.link calls linkat(..., AT_SYMLINK_FOLLOW): it links the file the
    # /proc entry stands for (plain link() would link the entry itself, across devices).
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        try:
            os.link(source, os.path.basename(path), dst_dir_fd=directory, follow_symlinks=True)
            return
        except FileExistsError:
            pass
        temp = os.path.basename(temp_name(path))  # `path` exists: link beside it, then rename over it
        os.link(source, temp, dst_dir_fd=directory, follow_symlinks=True)
        try:
            os.replace(temp, os.path.basename(path), src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            os.unlink(temp, dir_fd=directory)
            raise
    finally:
        os.close(directory)


def write_text(path, text):
    """Writes `text` to `path` (UTF-8, "\n" line ends) through atomic_output; local or any gfile scheme."""
    with atomic_output(path) as temp:
        if "://" in path:
            with _gfile().GFile(temp, "w") as f:
                f.write(text)
        else:
            with open(temp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)


def check_export_dir(export_dir, protected=(), parts=None, flag="--export_dir", what="SavedModel"):
    """Refuses an output directory whose replacement would delete files the user keeps there.

    It may be missing, an empty directory, or an earlier output: a SavedModel directory, or
    with `parts` (the names, or fnmatch patterns, of what the output holds) a directory
    holding only those; nor may it hold or be one of the `protected` (flag name, path)
    pairs (data_dir, ...). `flag` and `what` name the directory and the output in messages.
    """
    import fnmatch
    gfile = _gfile()
    if not gfile.exists(export_dir):
        return
    if not gfile.isdir(export_dir):
        raise ValueError(f"{flag}={export_dir} is a file, not a directory: choose a new path for the {what}")
    real = os.path.realpath(export_dir) if "://" not in export_dir else export_dir.rstrip("/")
    for name, path in protected:
        other = os.path.realpath(path) if path and "://" not in path else (path or "").rstrip("/")
        if path and (other == real or other.startswith(real.rstrip("/") + "/")):
            raise ValueError(f"{flag}={export_dir} holds --{name}={path}: the output replaces its whole "
                             f"directory; choose a new path for the {what}")
    entries = [entry.rstrip("/") for entry in gfile.listdir(export_dir)]
    if parts:
        earlier_output = all(any(fnmatch.fnmatchcase(entry, part) for part in parts) for entry in entries)
    else:
        earlier_output = any(entry.startswith("saved_model.pb") for entry in entries)
    if entries and not earlier_output:
        raise ValueError(f"{flag}={export_dir} is a directory of other files, not an earlier export: the output "
                         f"replaces its whole directory; choose a new or empty path for the {what}")


@contextlib.contextmanager
def export_directory(export_dir, parts=None, flag="--export_dir", what="SavedModel"):
    """Yields a temporary directory to write an output directory in; it becomes `export_dir` on success.

    check_export_dir first (nothing but an earlier output is ever replaced). Locally the
    earlier output and the new one trade places in one step (renameat2 RENAME_EXCHANGE), so
    a kill at any moment leaves `export_dir` whole, old or new; where the kernel or file
    system cannot, the earlier output is set aside only once the new one is complete, and
    put back if the swap fails.
    """
    check_export_dir(export_dir, parts=parts, flag=flag, what=what)
    if "://" in export_dir:
        with _remote_export_directory(export_dir) as temp:
            yield temp
        return
    make_directories(os.path.dirname(os.path.abspath(export_dir)))
    remove_stale_temps(export_dir)
    temp = temp_name(export_dir)
    try:
        yield temp
        _move_directory_into_place(temp, export_dir)
    finally:
        _remove(temp)  # the new one after a failure, or the earlier output after the swap


def _move_directory_into_place(temp, export_dir):
    """Puts directory `temp` at `export_dir`; an earlier `export_dir` ends up at `temp`."""
    if not os.path.lexists(export_dir):
        os.rename(temp, export_dir)
        return
    if _exchange(temp, export_dir):
        return
    earlier = temp_name(export_dir)
    os.rename(export_dir, earlier)
    try:
        os.rename(temp, export_dir)
    except BaseException:
        os.rename(earlier, export_dir)  # keep the earlier output
        raise
    os.rename(earlier, temp)


def _exchange(a, b):
    """Swaps two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), b)


@contextlib.contextmanager
def _remote_export_directory(export_dir):
    """export_directory for a tf.io.gfile scheme (gs://, ...): no atomic swap there."""
    gfile = _gfile()
    earlier = None
    try:
        with atomic_output(export_dir, named=True) as temp:
            yield temp
            if gfile.exists(export_dir) and gfile.listdir(export_dir):
                earlier = temp_name(export_dir)  # removed once the new export is in place
                gfile.rename(export_dir, earlier)
    finally:
        if earlier and gfile.exists(earlier):
            if gfile.exists(export_dir):
                gfile.rmtree(earlier)
            else:
                gfile.rename(earlier, export_dir)  # the new one failed: keep the earlier export


_CREATED_DIRECTORIES = []  # local directories this process created, outermost first


def make_directories(path):
    """Creates directory `path` and its missing parents (local, or any tf.io.gfile scheme).

    The local directories it creates are remembered: a run that then fails removes those
    still empty (remove_created_directories), so a failure leaves no trace.
    """
    if "://" in path:
        _gfile().makedirs(path)
        return
    missing = []
    head = os.path.abspath(path)
    while head and not os.path.exists(head):
        missing.append(head)
        head = os.path.dirname(head)
    os.makedirs(path, exist_ok=True)
    _CREATED_DIRECTORIES.extend(reversed(missing))


def remove_created_directories():
    """Removes the directories make_directories created that are (still) empty, innermost first."""
    while _CREATED_DIRECTORIES:
        with contextlib.suppress(OSError):
            os.rmdir(_CREATED_DIRECTORIES.pop())


def process_alive(pid):
    """Whether a process with id `pid` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _stale(match):
    """Whether a temporary name's match belongs to no live process (an old name without pid: stale)."""
    pid = match.group(1)
    return not pid or (int(pid) != os.getpid() and not process_alive(int(pid)))


def remove_stale_temps(path):
    """Removes `path`'s temporary names left by killed runs (`path.tmp-PID...`, PID not alive)."""
    if "://" in path:
        return
    for temp in glob.glob(glob.escape(path.rstrip("/")) + ".tmp-*"):
        match = _TEMP_SUFFIX.search(temp)
        if match and temp[:match.start()] == path.rstrip("/") and _stale(match):
            _remove(temp)


def remove_stale_temp_files(directory, subdirectories=True):
    """Removes what killed runs left in `directory` under temporary names; returns the paths.

    A name carrying the id of a process still alive (another run writing there) is kept.
    Local directories only; `subdirectories` also cleans one level below (e.g. `best/`).
    """
    if "://" in directory or not os.path.isdir(directory):
        return []
    removed = []
    for entry in os.scandir(directory):
        match = _TEMP_SUFFIX.search(entry.name) or _CHECKPOINT_TEMP.search(entry.name)
        if match:
            if not _stale(match):
                continue
            _remove(entry.path)
            removed.append(entry.path)
        elif subdirectories and entry.is_dir(follow_symlinks=False):
            removed.extend(remove_stale_temp_files(entry.path, subdirectories=False))
    return removed


def die_with_parent():
    """Makes this (worker) process end when its parent dies (Linux), instead of lingering and
    printing BrokenPipeError tracebacks; a no-op elsewhere. Use as a Pool initializer step."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def readable_once(path):
    """Whether `path` is a pipe, a terminal or another stream that can be read only once."""
    if "://" in path:
        return False
    import stat
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


class ProgressLine:
    """Progress of a data job: a line on stderr (a terminal) or in the log every few seconds.

    Call it with the number of items just done; `close()` prints the final count and rate.
    """

    def __init__(self, what, total=None, interval=5.0):
        self.what, self.total, self.interval = what, total, interval
        self.done = 0
        self.start = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, n):
        self.done += n
        now = time.monotonic()
        if now - self.last >= (0.5 if self.tty else self.interval):
            self.last = now
            self._show(now)

    def _show(self, now, final=False):
        rate = self.done / max(now - self.start, 1e-9)
        text = f"{self.what}: {self.done}"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text += f"/{self.total} ({100.0 * self.done / self.total:.0f}%), ETA {eta:.0f}s"
        text += f", {rate:.0f}/s"
        if self.tty:
            sys.stderr.write("\r" + text + ("\n" if final else ""))
            sys.stderr.flush()
        else:
            logging.info(text)

    def close(self):
        self._show(time.monotonic(), final=True)


# --- The runners' run settings and results ---------------------------------------------

def epoch_steps(num_examples, train_batch_size, num_train_epochs, warmup_proportion, unit="examples"):
    """(num_train_steps, num_warmup_steps) of num_train_epochs over num_examples, as the original counts.

    Raises ValueError when that makes no step (`unit` names what the examples are).
    """
    num_train_steps = int(num_examples / train_batch_size * num_train_epochs)
    if num_train_steps < 1:
        raise ValueError(f"{num_examples} training {unit} at --train_batch_size={train_batch_size} and "
                         f"--num_train_epochs={num_train_epochs} make no training step")
    return num_train_steps, int(num_train_steps * warmup_proportion)


def validate_run_flags(train_batch_size=None, eval_batch_size=None, predict_batch_size=None, learning_rate=None,
                       num_train_epochs=None, warmup_proportion=None):
    """Checks a runner's own flags before anything is written; raises ValueError naming the flag."""
    for name, value in (("train_batch_size", train_batch_size), ("eval_batch_size", eval_batch_size),
                        ("predict_batch_size", predict_batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"--{name}={value} must be at least 1")
    if learning_rate is not None and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"--learning_rate={learning_rate} must be a positive number (BERT fine-tuning uses 2e-5 "
                         f"to 5e-5)")
    if num_train_epochs is not None and not (math.isfinite(num_train_epochs) and num_train_epochs >= 0):
        raise ValueError(f"--num_train_epochs={num_train_epochs} must be 0 or more")
    if warmup_proportion is not None and not 0 <= warmup_proportion <= 1:
        raise ValueError(f"--warmup_proportion={warmup_proportion} must be between 0 and 1")


def write_eval_results(path, results):
    """Writes `key = value` lines, keys sorted, values with str() (as the original), atomically."""
    logging.info("***** Eval results *****")
    for key in sorted(results):
        logging.info("  %s = %s", key, str(results[key]))
    write_text(path, "".join(f"{key} = {str(results[key])}\n" for key in sorted(results)))
