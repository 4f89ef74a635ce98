#!/usr/bin/env python
"""Write the Colab badge and the Colab install cell of every chapter notebook from ``_config.yml``.

The repository URL and branch live in ONE place, the ``repository:`` section of ``_config.yml``.
This script derives from them, for each ``notebooks/*.ipynb``:

* the badge line of the first (title) cell: ``[![Open In Colab](<svg>)](<colab url of this notebook>)``,
  placed right after the ``# Title`` line;
* the second cell, a code cell tagged ``colab-install`` (and ``remove-cell``, so that the web page does not
  show it) that runs only inside Google Colab and installs
  ``deqlib`` from the repository and branch, plus ``torchattacks`` without its dependencies (it pins an old
  ``requests`` that would downgrade Colab's); the reader's torch is kept, pinned to the version installed.

Usage::

    python tools/colab.py            # rewrite the notebooks that are out of date
    python tools/colab.py --check    # exit 1 (and list them) if any notebook is out of date; writes nothing

The badge is an inline PNG (a ``data:`` URI), so the web book shows it without contacting another host.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TAG = "colab-install"
#: jupyter-book leaves a cell with this tag out of the web page: the install cell is machinery, not content.
HIDE_TAG = "remove-cell"
BADGE_ALT = "Open In Colab"
BADGE_RE = re.compile(r"^\[!\[" + re.escape(BADGE_ALT) + r"\]\([^)]*\)\]\([^)]*\)\s*$")

#: Extras of deqlib a chapter needs in Colab.
EXTRAS = "data,viz"
#: torchattacks is installed with --no-deps: its metadata pins requests==2.25.1.
TORCHATTACKS = "torchattacks==3.5.1"

#: The badge, a 97 x 20 PNG ("Open in" | "Colab", DejaVu Sans), inlined as a data: URI. PNG, not SVG: markdown-it
#: (hence MyST and Jupyter) refuses data:image/svg+xml links as unsafe, but renders data:image/png.
_BADGE_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAGEAAAAUCAYAAACd6VPRAAAJyklEQVR42u2ZfYxU1RnGf+fcr5k7M7sz7Fo+pBbRxcXWCEldQoyt"
    "tBLTmiJRN8VIwNaUQokBwYS0NcU0xpbEltrYBrFYGytUt4oIsZEqW0EN0lYkBt3NrptqVmiBZXZ3dmbuzL33nP5xd8Zl2QHWr7ap"
    "J9lkzsw57z33/Xje5zkrAG688cbrLctqU0pJrbXB//CQQlPwLX5y7W4+P7EPzxdIof+rzigEobRRQYnWWCs75HAAtmmtTa215NPx"
    "sQ+lkDrANCy2+W1cb5qm+bRSCqWUFkKIT130iVSCCAO0aRIXBk9LpRRa6zMGQAjBfyI+QggM4+NDRz3i75wyWEOozr4uUOKcAhEE"
    "6CCECvyIWk6QUhKGIUEQRJgr5ScWgCAIGBgY+FjshwqkAMsAQ4BSZwmGhpgNcffsUXOTGinOrSLg/SCM6YQwDBkaGiIWi1FfX4/W"
    "mnw+P2ZV1KqUs1VRLVvlcplJkyZx0003EYbhKes+iqqMu1Fm9w1Jir4glgBTnl4lAFqD4cDf3nZ4en8Sw4n2jl4nRBTc3+yuZ7Ao"
    "kTLae7ZhnikL4/E4y5cv57LLLkNKyeDgINu3b2fv3r24rksQBEgp0VoThiGmaQ4fWlcdFQQBQghM00QpNdyY1Gn79IjTVp7f2NjI"
    "/Pnz2blzJ1prtNZIKavPrdgYLwQ5Jjz05zr++Nc6CiVJzFZcPbPI7fOzxG1FGII17Bk/BKUEjqM50BPjpc4EC68aolQUSENjycim"
    "H4IpIFSC+3dn+MqlBSbUKbSCUHPGyjBrd3DFnXfeSTqdZsOGDfT39zNnzhzuuOMOfN/n5ZdfpqGhgXw+j2EYJJNJstkspmlimia+"
    "7xMEAZlMhjAMGRgYIBaLobUmHo+Tz+exbZtEIsHAwACmaVYDp5QiFovR1dXF+vXrMU0TwzCQUpLP58lkMhQKBcrlMrZtn3MgQgXx"
    "BNy/K8Nv99bz00XHmX2BR7ZgsPWVOjqPWFwxo4SlIDsUlUUmpSiVAAWural3FShwLI3W0JeXOKamLqEJ/Og556VC6mIh+aJEKU0q"
    "oSmVa2D+WEEQQlAsFpk1axbNzc2sWLGCY8eOkUgk2LZtGxMnTmTRokXs3r2bVatWkU6nMU2Tiy66iEOHDrFp0yYKhQKZTIYVK1bQ"
    "1NSEUornn3+eJ554gnw+z+rVqxFCkEwmufDCC3n11VfZvHnzKfBVKBSYMWMGS5YsYdWqVcydO5elS5fS2dlJS0sLuVyOBx54gK6u"
    "rnMKhNZgm3AiK/ndvnp+sfhfXP3FIv4gTEyH/PibJyh54HmCe3Y00H7YBQHzZhb4/oI+HBFltB8CNrz2lsOGXQ1kCwahgtaWHCuv"
    "6UeXQWvBxucmcODtOIOeZPW1J7n5yhylUgRZp2mb076QEt/3ufjii3n33Xfp7+8nlUphGAbpdJrXX3+dxsZGXNdFSsnMmTPZunUr"
    "a9eupampiRtuuIHBwUGWLVtGPp/ntttuY82aNbS0tDB37lzy+Tyu6zJ9+nS2bNnCXXfdxZw5c5g9ezaFQqFaDVprTNMklUpVYWva"
    "tGm88847rFy5kp6eHhYvXkypVDqnHqEBw4Luf9q4jmLmlDJBLqoOrwz5PDhx2PJiPXvedHnke0d55LtH2fNmgof+Ug9xCLWInKgg"
    "FVOs+Go/m799lB8t7OPRl+p57R8Oybimb0iSzRs8dvsR1i88wb3PNPBWr4Vtj90jPjDVUUrhOA4vvPACBw8epLe3l7a2Npqbm5k8"
    "eTIzZsxASsnSpUu57rrriMVizJo1iyAIsCyLXbt2cfjwYQ4fPkxnZyeTJk0iDMNR2asJggCtNY7j0Nvby/bt2zl58iR79uyhvr4e"
    "y7LG3RdqMBVQ8FJnnJXXZGn6rE/TNJ/lX82y9y0XdOSsyqNsEx57pY5vbZ7Cvc80kPMkvSdNBBCzNGu+dpLP1IV8vSVPy0UeL3a4"
    "CBuUFmcPglIKy7Lo7u7mggsuIJ1Ok8vlCMOQ/v5+Lr/8ck6cOFHtBbUaeyV7lVIkk0na29vZt28frusyrE1wHAfHcRBCVJv2Gfl3"
    "EGDbNo7jYNv2aazpjE4GQh8unlSmUJK8dcTGTIEhI+rpxkdmqahSHjGWIQPu2dFAYyrkyTXvsWttL5eeX6IUSJC1sb/mVcvp2Bk1"
    "zjfeeIOOjg7Wr1/PJZdcQjKZZNGiRSxYsIC2tjaEEHiex7x585g9ezZTp06ltbWVjo4Ojh49Snd3N0optm3bxsMPP0xHRwfZbJYw"
    "DDEMoxqoCuMZS3+MFGuVz5U9wLiEnBBQDqAxo1h61QCrfz+R5/YnODlk0HnE5od/aKTzPYtrvpDnV89n6O616HrHYtOeDF9qLsIw"
    "/azkSskX1MUVrqN55u9JDvTEcczoXDlP8vM/TeD4oMGzBxIceDvGl5sL6DJj3mPVZEdSSu677z5uvfVW1q1bV6WoGzduZP/+/cTj"
    "cYQQ9PT0cMsttzB9+nQOHTrEU089RSqV4sEHH2TZsmVs2rSJMAzp6+vj0UcfBcDzPHzfr2bx6HmVzYRhtU8EQUCxWDzlt5HzcxmG"
    "hFIRVl2bxbVDfvbsBIplEVHU5gLnZwIWX5mj55jNkl9PRgBXX5rnO/P6oQBxW+PaGlRkY93j57HzYJIrLixyZVMhqiQFn2v0ySRC"
    "bv7lFHIlyQ++0cfMqX7NxixaW1v1mcSa53mk02ls2yaXy+F5HqlUiuPHj3P33XfT1dXF448/zpQpU+jr6zuFovq+TyaTQQjB0NAQ"
    "YRhiWRa2baOUwvcjTuc4TnU+MhBSSmzbplgsVu2WSqXqb5ZlVefjvUW1Y1FABj1JzNKkUprAi1DIsiCbe5+iBn4kzvxQEKoI820T"
    "PD/K+vNSimI5wnvL0BTLgvqEJjsksQxN0h0nRR0JSxX+73kexWIRwzBIJBJVSHBdl3Q6je/75HI5HMep9pWK04aGhqrQUYETz/NO"
    "UdKj56MroSLQfN+vwlblKuWDXqMUC2Aa0JBUKAVenkjhAl4J6uIR7njD2SsA29SI4Tskz48qqyGpKAWRLYi0QzIWOb0urqr2zkWs"
    "6bF6UMXZFezVWqOUQgiB67q0t7czMDBQpasjm2sFt0eq6Mp3ox1Xy5GVu6uKAh+pkEfPxzsMGTlTBdGbV44ghvtHoCqVdarWUMNr"
    "pHh/vxj+LKoXeLVtjNIuWgiEOfwi4kxX2aNftNK829vbkVISj8drspsPSx9H7h/rHB+Klta8uqwNHaLGfjHGGnFm8ahNM2oRMgiC"
    "hVLK4nC26/E4J5FIEI/HPxKe/v80tEYbJmhJUYUslE8++eQO3/dvFkIEQgg1HmPD/wz61Kvj1QUSJUyC0Odmq5Ud/waTkt6Zam84"
    "TwAAAABJRU5ErkJggg=="
)
BADGE_DATA_URI = "data:image/png;base64," + _BADGE_PNG_BASE64


def read_settings(config_path: Path = ROOT / "_config.yml") -> Dict[str, str]:
    """The repository URL, branch, path of the book in the repository and Colab URL from ``_config.yml``."""
    cfg = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    repo = cfg.get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    branch = str(repo.get("branch", "")).strip()
    m = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?", url)
    if not m:
        raise SystemExit(
            f"colab.py: repository.url in {config_path} must be https://github.com/OWNER/NAME, got {url!r}"
        )
    if not branch:
        raise SystemExit(f"colab.py: repository.branch is empty in {config_path}")
    colab = str((cfg.get("launch_buttons") or {}).get("colab_url") or "https://colab.research.google.com").rstrip("/")
    return {
        "url": url,
        "owner": m.group(1),
        "name": m.group(2),
        "branch": branch,
        "path_to_book": str(repo.get("path_to_book") or "").strip("/"),
        "colab_url": colab,
    }


def colab_link(settings: Dict[str, str], nb_path: Path) -> str:
    rel = nb_path.resolve().relative_to(ROOT).as_posix()
    if settings["path_to_book"]:
        rel = f"{settings['path_to_book']}/{rel}"
    return f"{settings['colab_url']}/github/{settings['owner']}/{settings['name']}/blob/{settings['branch']}/{rel}"


def badge_line(settings: Dict[str, str], nb_path: Path) -> str:
    return f"[![{BADGE_ALT}]({BADGE_DATA_URI})]({colab_link(settings, nb_path)})"


def install_source(settings: Dict[str, str]) -> str:
    spec = f"deqlib[{EXTRAS}] @ git+{settings['url']}@{settings['branch']}"
    return "\n".join(
        [
            "# Colab only (written by tools/colab.py): install deqlib from the book's",
            "# repository. torch stays the one Colab has; torchattacks comes without its",
            "# pinned (old) requests.",
            "import sys",
            "",
            'if "google.colab" in sys.modules:',
            "    import importlib.metadata",
            "    import subprocess",
            "",
            f'    deqlib = "{spec}"',
            '    torch_pin = "torch==" + importlib.metadata.version("torch")',
            '    pip = [sys.executable, "-m", "pip", "install", "-q"]',
            "    subprocess.run(pip + [deqlib, torch_pin], check=True)",
            f'    subprocess.run(pip + ["{TORCHATTACKS}", "--no-deps"], check=True)',
            "    # the recorded results of experiments/ (deqlib.recorded.load_results)",
            "    import os",
            "",
            '    os.environ["DEQLIB_RESULTS_URL"] = (',
            f'        "{results_url(settings)}"',
            "    )",
        ]
    )


def results_url(settings: Dict[str, str]) -> str:
    """The raw address of the repository's experiments/results folder (deqlib.recorded downloads from it)."""
    book = f"{settings['path_to_book']}/" if settings["path_to_book"] else ""
    return (
        f"https://raw.githubusercontent.com/{settings['owner']}/{settings['name']}/{settings['branch']}/"
        f"{book}experiments/results"
    )


def _lines(text: str) -> List[str]:
    """A cell source the way Jupyter stores it: a list of lines, each but the last ending in a newline."""
    return text.splitlines(keepends=True)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _install_cell(source: str) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": "colab-install",
        "metadata": {"tags": [INSTALL_TAG, HIDE_TAG]},
        "outputs": [],
        "source": _lines(source),
    }


def update_notebook(nb: dict, settings: Dict[str, str], nb_path: Path) -> Tuple[dict, List[str]]:
    """Return the notebook with an up-to-date badge and install cell, and the list of changes made."""
    cells = nb.get("cells", [])
    changes: List[str] = []
    if not cells or cells[0].get("cell_type") != "markdown" or not _source(cells[0]).lstrip().startswith("# "):
        raise SystemExit(f"colab.py: {nb_path}: the first cell must be a markdown cell starting with '# Title'")

    # 1. badge in the title cell, on the line after the title
    lines = _source(cells[0]).strip("\n").split("\n")
    title_idx = next(i for i, line in enumerate(lines) if line.startswith("# "))
    wanted = badge_line(settings, nb_path)
    badge_idx = [i for i, line in enumerate(lines) if BADGE_RE.match(line)]
    rest = [line for i, line in enumerate(lines) if i not in badge_idx and i != title_idx]
    while rest and not rest[0].strip():
        rest.pop(0)
    new_lines = [lines[title_idx], "", wanted] + ([""] + rest if rest else [])
    if new_lines != lines:
        changes.append("badge")
        cells[0]["source"] = _lines("\n".join(new_lines))

    # 2. install cell, second
    wanted_src = install_source(settings)
    idx = [i for i, c in enumerate(cells) if INSTALL_TAG in c.get("metadata", {}).get("tags", [])]
    tags = cells[1].get("metadata", {}).get("tags", []) if len(cells) > 1 else []
    if idx != [1] or _source(cells[1]) != wanted_src or cells[1].get("outputs") or HIDE_TAG not in tags:
        changes.append("install cell")
        old = cells[idx[0]] if idx else None
        for i in reversed(idx):
            cells.pop(i)
        new = _install_cell(wanted_src)
        if old is not None:
            new["id"] = old.get("id", new["id"])
            old_tags = old.get("metadata", {}).get("tags", [])
            tags = old_tags + [t for t in (INSTALL_TAG, HIDE_TAG) if t not in old_tags]
            new["metadata"] = {**old.get("metadata", {}), "tags": tags}
        cells.insert(1, new)
    nb["cells"] = cells
    return nb, changes


def dumps(nb: dict) -> str:
    """Serialise like Jupyter (nbformat.write) does: sorted keys, one-space indent, final newline."""
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def process(paths: List[Path], check: bool, settings: Optional[Dict[str, str]] = None) -> int:
    settings = settings or read_settings()
    stale = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
        nb, changes = update_notebook(nb, settings, path)
        new_text = dumps(nb)
        if changes or new_text != text:
            stale.append((path, changes or ["formatting"]))
            if not check:
                path.write_text(new_text, encoding="utf-8")
    for path, changes in stale:
        verb = "out of date" if check else "updated"
        print(f"{path.relative_to(ROOT)}: {verb} ({', '.join(changes)})")
    if check and stale:
        print("colab.py: run `python tools/colab.py` and commit the notebooks", file=sys.stderr)
        return 1
    if not stale:
        print(f"colab.py: {len(paths)} notebook(s) up to date with {settings['url']}@{settings['branch']}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if a notebook is out of date")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    return process(paths, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
