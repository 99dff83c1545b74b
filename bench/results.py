"""The benchmarks' record: machine, versions and command of a run, appended to bench/RESULTS.md."""

import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys

RESULTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
_HEADER = """# Benchmark results

Appended by the scripts in bench/, newest last. Each entry says when, on what machine, with
which versions and with which command it was taken; compare numbers only within one machine.
The corpora are built by bench/corpus.py from text installed on that machine.
"""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_line():
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}; "
            f"Python {platform.python_version()}, tensorflow {_version('tensorflow')}, "
            f"tensorflow-text {_version('tensorflow-text')}, {platform.system()} {platform.release()}")


def command_line():
    return " ".join(shlex.quote(arg) for arg in [os.path.relpath(sys.executable)] + sys.argv)


def markdown_table(header, rows):
    """`header` and `rows` (lists of cells) as a Markdown table, columns padded to line up."""
    cells = [list(map(str, header))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def code_line(sources):
    """The commit of the checkout and, for each of `sources` (repo paths), whether it differs."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [path for path in sources if git("status", "--porcelain", "--", path)]
    return f"commit {head}" + (f", with uncommitted changes in {', '.join(changed)}" if changed else "")


def append_result(title, body, sources=()):
    """Appends one dated entry (title, machine, code, command, then `body`) to RESULTS.md.

    `sources`: repo paths of the code measured; the entry says if they differ from the commit.
    """
    exists = os.path.exists(RESULTS_FILE)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    entry = (f"\n## {title} ({stamp})\n\n"
             f"- machine: {machine_line()}\n"
             f"- load average at the end (other users of the machine): "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
             f"- code: {code_line(sources)}\n"
             f"- command: `{command_line()}`\n\n"
             f"{body.rstrip()}\n")
    with open(RESULTS_FILE, "a", encoding="utf-8") as f:
        if not exists:
            f.write(_HEADER)
        f.write(entry)
