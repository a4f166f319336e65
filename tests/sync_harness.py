"""The run harness is one text in every script: copy sac.py's into the others, or check that they agree.

    python tests/sync_harness.py           # after a fix to sac.py's harness: copy it into the other scripts
    python tests/sync_harness.py --check   # exit 1 and name the scripts whose copy differs (tests/test_harness.py)
    python tests/sync_harness.py td3.py    # copy it into the scripts named only

The harness runs from the line that starts with `# === Run harness` to the main guard.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE, COPIES = "sac.py", ["ac.py", "a2c.py", "a3c.py", "ddpg.py", "td3.py"]


def split(path: str) -> tuple[list[str], list[str], list[str]]:
    """(the algorithm, the harness, the main guard) of a script, as lists of lines."""
    lines = open(path).read().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("# === Run harness"))
    end = next(i for i, line in enumerate(lines) if line.startswith('if __name__ == "__main__"'))
    return lines[:start], lines[start:end], lines[end:]


if __name__ == "__main__":
    harness = split(os.path.join(REPO, SOURCE))[1]
    differ = []
    for name in [a for a in sys.argv[1:] if a.endswith(".py")] or COPIES:
        path = os.path.join(REPO, name)
        try:
            top, theirs, bottom = split(path)
        except StopIteration:
            differ.append(f"{name} (no harness)")
            continue
        if theirs != harness:
            differ.append(name)
            if "--check" not in sys.argv:
                with open(path, "w") as f:
                    f.write("\n".join(top + harness + bottom))
    if "--check" in sys.argv and differ:
        sys.exit(f"the harness differs from {SOURCE}'s in: {', '.join(differ)}")
    print(f"{'differ' if '--check' in sys.argv else 'copied into'}: {', '.join(differ) or 'none'}")
