"""The repository talks about the project, not about how or where it was made.

Every text file git tracks (plus untracked files that are not ignored, i.e. what the next commit may
add) is searched for words that only made sense to the people writing it: issue numbers ("issue 5",
"issues 4 and 5"), references to a specification users do not have ("SPEC"; the docs/ pages are the
reference), absolute paths of someone's machine (/home/<name>, /root/, /tmp/, /work/, /Users/) and
"session(s)" used about the work. A failure names the file, the line and the word.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()

# the words, each with the reason it is refused
PATTERNS: dict[str, re.Pattern[str]] = {
    "issue number": re.compile(r"\b[Ii]ssues? \d+"),
    "SPEC reference (link a docs/ page instead)": re.compile(r"\bSPEC\b"),
    # not after a word character or a dot: outputs/tmp/ and ./tmp/ are relative paths
    "absolute path of a machine": re.compile(r"(?<![\w.])/(?:home/\w|root/|tmp/|work/|Users/)"),
    # the work's sessions; an fMRI scan session is a fact about the data
    "session": re.compile(r"(?<!scan )(?<!imaging )(?<!fMRI )\b[Ss]essions?\b"),
}
ANY = re.compile("|".join(f"(?:{p.pattern})" for p in PATTERNS.values()))


def violations(text: str) -> list[tuple[int, str, str]]:
    """(line number, what, line) for every refused word in ``text``."""
    if not ANY.search(text):
        return []
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in PATTERNS.items():
            if pattern.search(line):
                out.append((number, what, line.strip()))
    return out


def repository_files() -> list[Path]:
    """Tracked files and untracked ones git does not ignore, that exist in the working tree."""
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    )  # fmt: skip
    names = sorted({name for name in proc.stdout.decode().split("\0") if name})
    return [ROOT / name for name in names if (ROOT / name).is_file() and (ROOT / name).resolve() != SELF]


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file (a NUL byte, or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_the_patterns_catch_planted_lines_and_spare_innocent_ones():
    bad = [
        "Fixed in issue 5.",
        "Issue 4's acceptance run",
        "as issues 4 and 5 asked",
        "(issue 7)",
        "see SPEC section 6",
        "the data were in /home/alice/data",
        "OUT=${OUT:-/tmp/gpu_check}",
        "written to /root/.cache/x",
        "cd /work/main",
        "open /Users/bob/x.csv",
        "No GPU was lent to this session.",
        "two sessions later",
    ]
    good = [
        "outputs/tmp/x and ./tmp/y are relative",
        "instruction issue on every multiprocessor",
        "the spec of a simulator method (method:precision)",
        "see docs/cost.md#fcd",
        "each subject's scan session",
        "a tissue 5 mm thick",
        "https://example.org/work/page",
    ]
    for line in bad:
        assert violations(line), f"not caught: {line!r}"
    for line in good:
        assert not violations(line), f"wrongly caught: {line!r}: {violations(line)}"
    assert [n for n, _, _ in violations("fine\nsee SPEC here\nfine")] == [2]  # the line is named


IN_GIT = shutil.which("git") is not None and (ROOT / ".git").exists()


@pytest.mark.skipif(not IN_GIT, reason="needs a git checkout")
def test_no_file_says_how_or_where_the_work_was_done():
    files = repository_files()
    assert len(files) > 50, f"only {len(files)} files listed: is {ROOT} the repository?"
    found = []
    for path in files:
        text = read_text(path)
        if text is None:
            continue
        rel = path.relative_to(ROOT)
        found += [f"{rel}:{number}: {what}: {line[:160]}" for number, what, line in violations(text)]
    assert not found, f"{len(found)} line(s) about how or where the work was done:\n" + "\n".join(found)
