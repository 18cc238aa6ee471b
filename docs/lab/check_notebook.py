"""Re-executes the lab notebook (prism-lab.ipynb) and checks its printed lines.

Every code cell's text output (what it prints, and its value's text) must equal the output
committed in the notebook, line for line, and every cell that committed a picture must draw one
again. Pictures are not compared: they show measured lag.

    python check_notebook.py            # check (exit 1 on a difference)
    python check_notebook.py --write    # run and save the outputs into the notebook

Runs from any folder; the notebook runs in docs/lab/. PRISM_BIN and LAB_WORK are passed on.
"""

import os
import sys

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "prism-lab.ipynb")


def text_of(cell):
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            parts.append(out["text"])
        elif out.get("output_type") in ("execute_result",) and "text/plain" in out.get("data", {}):
            parts.append(out["data"]["text/plain"] + "\n")
        elif out.get("output_type") == "error":
            parts.append(f"error: {out.get('ename')}: {out.get('evalue')}\n")
    return "".join(parts)


def has_picture(cell):
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def main():
    committed = nbformat.read(PATH, as_version=4)
    fresh = nbformat.read(PATH, as_version=4)
    for cell in fresh.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    NotebookClient(fresh, timeout=600, kernel_name="python3", resources={"metadata": {"path": HERE}}).execute()
    if "--write" in sys.argv:
        nbformat.write(fresh, PATH)
        print(f"wrote {PATH}")
        return 0
    failures = 0
    code_cells = [(a, b) for a, b in zip(committed.cells, fresh.cells) if a.cell_type == "code"]
    for i, (want, got) in enumerate(code_cells, 1):
        if text_of(want) != text_of(got):
            failures += 1
            print(f"code cell {i}: printed lines differ\n--- committed\n{text_of(want)}--- now\n{text_of(got)}")
        if has_picture(want) and not has_picture(got):
            failures += 1
            print(f"code cell {i}: drew no picture")
    print(f"{len(code_cells) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
