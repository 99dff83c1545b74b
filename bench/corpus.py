"""Builds the benchmark corpora from text already on this machine (nothing is downloaded).

Sources, each in sorted path order: English man pages (/usr/share/man/man*/), translated man
pages (/usr/share/man/<lang>/man*/) and Debian changelogs (/usr/share/doc/*/changelog*.gz).
Troff requests and escapes are stripped; what is left is written one line per line, a blank
line between source files (documents), in the format create_pretraining_data.py reads.

- `mixed` (default ~13 MB): one document from each of the three sources in turn.
- `multilingual` (default ~4 MB): the translated man pages only, one language after another
  in turn (25 languages here: Latin, Cyrillic and CJK scripts).

Symlinked pages and byte-identical files are skipped, and each document is cut after
`--max_doc_bytes` so a few huge changelogs cannot dominate. The result depends only on the
files installed, so on one machine it is the same every time; it is cached under
/tmp/bert_bench/ and rebuilt only when missing (or with --rebuild).

    .venv/bin/python bench/corpus.py                   # build both, print their stats
    .venv/bin/python bench/corpus.py --mixed_mb=5      # a smaller mixed corpus
"""

import argparse
import glob
import gzip
import hashlib
import os
import re

CACHE_DIR = "/tmp/bert_bench"
MAX_DOC_BYTES = 100_000
_FORMAT_VERSION = 5  # bump when the extraction changes, so stale caches are not reused

# Named troff characters (\(xx, \[xx]) and strings (\*(xx) worth keeping; others vanish.
_TROFF_CHARS = {
    "em": "\u2014", "en": "\u2013", "hy": "-", "mi": "-", "aq": "'", "dq": '"', "lq": "\u201c",
    "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "bu": "\u2022", "co": "\u00a9", "rg": "\u00ae",
    "tm": "\u2122", "ti": "~", "ha": "^", "at": "@", "sl": "/", "rs": "\\", "ba": "|", "br": "|",
    "ga": "`", "aa": "\u00b4", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "\u27e8",
    "ra": "\u27e9", "<=": "\u2264", ">=": "\u2265", "!=": "\u2260", "**": "*", "mu": "\u00d7",
    "de": "\u00b0", "Fo": "\u00ab", "Fc": "\u00bb", "fo": "\u2039", "fc": "\u203a", "R": "\u00ae",
    "Tm": "\u2122", "rA": "\u21d2", "->": "\u2192", "<-": "\u2190", "ss": "\u00df", "pc": "\u00b7",
}
# Escapes in one pass, left to right. Groups: named char, string, \u-style named char, other.
_ESCAPE = re.compile(
    r"\\(?:"
    r"\((?P<paren>..)"                      # \(em
    r"|\[(?P<bracket>[^\]]*)\]"             # \[em], \[u00E9]
    r"|\*(?:\((?P<str2>..)|\[(?P<strn>[^\]]*)\]|(?P<str1>.))"  # \*(lq, \*[R], \*R
    r"|[fFn](?:\(..|\[[^\]]*\]|.)"          # font and number-register references
    r"|s[-+]?(?:\(..|\[[^\]]*\]|\d\d?)"     # point size
    r"|[hvwoLlDXZbxNRSHC]'[^']*'"           # delimited arguments: motions, widths, drawing
    r"|k."                                  # mark a horizontal position
    r"|[|^&)%c:/,!{}?]"                     # zero-width and control escapes
    r"|\"(?P<comment>.*)"                   # comment to end of line
    r"|(?P<other>.)"                        # \-, \e, \\, '\ ', \~, \0, and the rest
    r")")
_LITERAL_ESCAPES = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "'": "'", "`": "`",
                    "t": " ", "a": ""}

# Macros whose arguments are running text; in the alternating-font ones (BR, IR, ...)
# the arguments are run together without spaces, as troff prints them.
_TEXT_MACROS = {"SH", "SS", "B", "I", "SM", "SB", "IP", "TQ", "Nd", "Dl", "D1", "It", "Sh", "Ss"}
_ALTERNATING_MACROS = {"BR", "RB", "BI", "IB", "RI", "IR"}
_CONDITIONAL = re.compile(r"^[.'][ \t]*(?:if|ie)[ \t]+(?:!?'[^']*'[^']*'|\S+)[ \t]*(?P<rest>.*)$")
_MACRO_ARGS = re.compile(r'"([^"]*)"|(\S+)')


def _expand_escape(match):
    if match.group("paren") is not None:
        return _TROFF_CHARS.get(match.group("paren"), "")
    name = match.group("bracket")
    if name is not None:
        if re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
            return chr(int(name[1:], 16))
        return _TROFF_CHARS.get(name, "")
    for group in ("str2", "strn", "str1"):
        if match.group(group) is not None:
            return _TROFF_CHARS.get(match.group(group), "")
    other = match.group("other")
    if other is not None:
        return _LITERAL_ESCAPES.get(other, other)
    return ""


def troff_to_lines(source):
    """Returns the running text of a man page (troff or mdoc source) as a list of lines."""
    lines = []
    skip_until = None  # the end of a macro definition or of a multi-line conditional block
    source = re.sub(r"(?<!\\)\\\n", "", source)  # a trailing backslash continues the line
    for line in source.splitlines():
        if skip_until is not None:
            if skip_until(line):
                skip_until = None
            continue
        if line.startswith((".", "'")):
            name = line[1:].strip().split(" ", 1)[0]
            if name in ("de", "de1", "am", "ig"):
                skip_until = lambda line: line.strip() in ("..", "'..")
                continue
            conditional = _CONDITIONAL.match(line)
            if conditional or name == "el" or line[1:].lstrip().startswith("el\\{"):
                if line.count("\\{") > line.count("\\}"):
                    depth = [0]

                    def skip_until(line, depth=depth):  # conditional blocks nest
                        depth[0] += line.count("\\{") - line.count("\\}")
                        return depth[0] < 0
                    depth[0] = line.count("\\{") - line.count("\\}") - 1
                    continue
                # po4a-style `.if !'po4a'hide' .BR -d`: keep the macro that it guards
                line = conditional.group("rest").strip() if conditional else line[1:].strip()[2:].strip()
                if not line.startswith((".", "'")):
                    continue
            name, _, args = line[1:].strip().partition(" ")
            if name in _ALTERNATING_MACROS or name in _TEXT_MACROS:
                pieces = [quoted if quoted is not None and bare == "" else bare
                          for quoted, bare in _MACRO_ARGS.findall(args)]
                line = ("" if name in _ALTERNATING_MACROS else " ").join(pieces)
            else:
                continue
        text = " ".join(_ESCAPE.sub(_expand_escape, line).split())
        if text:
            lines.append(text)
    return lines


def changelog_to_lines(source):
    """Returns the non-empty lines of a Debian or upstream changelog, whitespace-normalized."""
    return [text for text in (" ".join(raw.split()) for raw in source.splitlines()) if text]


def _decode(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # older pages; deterministic either way


def _documents(paths, to_lines, max_doc_bytes, seen):
    """Yields each file's lines (cut at `max_doc_bytes`), skipping links and repeated contents."""
    for path in paths:
        if os.path.islink(path) or os.path.islink(os.path.dirname(path)):
            continue
        with open(path, "rb") as f:
            packed = f.read()
        digest = hashlib.sha1(packed).digest()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            data = gzip.decompress(packed)
        except (OSError, EOFError):
            continue
        lines, size = [], 0
        for line in to_lines(_decode(data)):
            size += len(line.encode("utf-8")) + 1
            if size > max_doc_bytes:
                break
            lines.append(line)
        if lines:
            yield lines


def english_man_pages():
    return sorted(glob.glob("/usr/share/man/man*/*.gz"))


def translated_man_pages():
    """Pages of each language in sorted order, the languages taken in turn (cs, da, de, ...)."""
    by_language = {}
    for path in sorted(glob.glob("/usr/share/man/*/man*/*.gz")):
        language = os.path.basename(os.path.dirname(os.path.dirname(path)))
        by_language.setdefault(language, []).append(path)
    return list(_round_robin([by_language[language] for language in sorted(by_language)]))


def changelogs():
    return sorted(glob.glob("/usr/share/doc/*/changelog*.gz"))


def _round_robin(streams):
    streams = [iter(s) for s in streams]
    while streams:
        for stream in list(streams):
            try:
                yield next(stream)
            except StopIteration:
                streams.remove(stream)


def write_corpus(path, documents, max_bytes):
    """Writes documents until `max_bytes` (the last one cut at a line); returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    size, full = 0, False
    with open(partial, "w", encoding="utf-8") as f:
        for lines in documents:
            separator = 1 if size else 0
            for i, line in enumerate(lines):
                encoded = len(line.encode("utf-8")) + 1 + (separator if i == 0 else 0)
                if size + encoded > max_bytes:
                    full = True
                    break
                f.write(("\n" if i == 0 and separator else "") + line + "\n")
                size += encoded
            if full:
                break
    os.replace(partial, path)  # atomic: a concurrent reader sees the old or the whole new file
    return path


def _cached(name, max_bytes, max_doc_bytes, make_documents, rebuild):
    path = os.path.join(CACHE_DIR, f"corpus-v{_FORMAT_VERSION}-{name}-{max_bytes}-{max_doc_bytes}.txt")
    if rebuild or not os.path.exists(path):
        write_corpus(path, make_documents(), max_bytes)
    return path


def mixed_corpus(max_bytes=13_000_000, max_doc_bytes=MAX_DOC_BYTES, rebuild=False):
    """Path of the mixed corpus: English and translated man pages and changelogs in turn."""
    def documents():
        seen = set()
        return _round_robin([
            _documents(english_man_pages(), troff_to_lines, max_doc_bytes, seen),
            _documents(changelogs(), changelog_to_lines, max_doc_bytes, seen),
            _documents(translated_man_pages(), troff_to_lines, max_doc_bytes, seen),
        ])
    return _cached("mixed", max_bytes, max_doc_bytes, documents, rebuild)


def multilingual_corpus(max_bytes=4_000_000, max_doc_bytes=MAX_DOC_BYTES, rebuild=False):
    """Path of the multilingual corpus: translated man pages only."""
    def documents():
        return _documents(translated_man_pages(), troff_to_lines, max_doc_bytes, set())
    return _cached("multilingual", max_bytes, max_doc_bytes, documents, rebuild)


def corpus_slice(path, max_bytes):
    """Path of the leading whole documents of corpus `path`, at most `max_bytes` in all."""
    sliced = f"{os.path.splitext(path)[0]}-slice-{max_bytes}.txt"
    if not os.path.exists(sliced) or os.path.getmtime(sliced) < os.path.getmtime(path):
        with open(path, encoding="utf-8") as f:
            documents = f.read().split("\n\n")
        kept, size = [], 0
        for document in documents:
            size += len(document.encode("utf-8")) + 2
            if size > max_bytes and kept:
                break
            kept.append(document.strip("\n").split("\n"))
        write_corpus(sliced, kept, max_bytes)
    return sliced


def read_lines(path):
    """The corpus's lines, blank document separators included, without newlines."""
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def corpus_stats(path):
    """Dict of MB, lines (non-blank), documents and the share of lines with non-ASCII text."""
    lines = [line for line in read_lines(path)]
    text_lines = [line for line in lines if line]
    non_ascii = sum(1 for line in text_lines if not line.isascii())
    return {
        "path": path,
        "MB": os.path.getsize(path) / 1e6,
        "lines": len(text_lines),
        "documents": sum(1 for line in lines if not line) + 1,
        "non_ascii_share": non_ascii / max(1, len(text_lines)),
    }


def format_stats(name, stats):
    return (f"{name}: {stats['MB']:.2f} MB, {stats['lines']:,} lines, {stats['documents']:,} documents, "
            f"{100 * stats['non_ascii_share']:.1f}% of lines non-ASCII ({stats['path']})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixed_mb", type=float, default=13.0, help="size cap of the mixed corpus, MB")
    parser.add_argument("--multilingual_mb", type=float, default=4.0, help="size cap of the multilingual corpus, MB")
    parser.add_argument("--max_doc_bytes", type=int, default=MAX_DOC_BYTES, help="each document is cut after this")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    args = parser.parse_args()
    mixed = mixed_corpus(int(args.mixed_mb * 1e6), args.max_doc_bytes, args.rebuild)
    multilingual = multilingual_corpus(int(args.multilingual_mb * 1e6), args.max_doc_bytes, args.rebuild)
    print(format_stats("mixed", corpus_stats(mixed)))
    print(format_stats("multilingual", corpus_stats(multilingual)))


if __name__ == "__main__":
    main()
