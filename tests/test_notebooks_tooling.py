"""The notebooks' conventions and the code behind the book's figures.

- every chapter notebook's Colab badge and install cell match ``_config.yml`` (``tools/colab.py --check``);
- committed notebooks carry outputs only in cells tagged ``nbval-check-output`` (``tools/nbclean.py --check``);
- ``tools/colab.py`` writes what it promises (guarded install, --no-deps, one source of the URL), idempotently;
- ``deqlib.viz`` draws every figure without a display, and the book's build makes its animations load nothing
  from other hosts (``book/_ext/book_html.py``), the way chapter 1 displays them;
- ``deqlib.widgets`` builds its explorers.

The notebooks themselves run in the book build; their pinned outputs are compared by ``test_notebook_outputs.py``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from deqlib import viz  # noqa: E402
from tests._book_build import load_tool  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


colab = load_tool("colab")
nbclean = load_tool("nbclean")


def _load_book_extension():
    spec = importlib.util.spec_from_file_location("book_ext_book_html", ROOT / "book" / "_ext" / "book_html.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------------------ notebooks
def test_colab_cells_up_to_date():
    result = subprocess.run([sys.executable, "tools/colab.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_notebooks_carry_only_pinned_outputs():
    result = subprocess.run([sys.executable, "tools/nbclean.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chapter_one_pins_results():
    nb = json.loads((ROOT / "notebooks" / "01_from_deep_networks_to_equilibria.ipynb").read_text())
    pinned = [c for c in nb["cells"] if nbclean.is_pinned(c)]
    assert len(pinned) >= 5 and all(c["outputs"] for c in pinned)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_first_cells(path):
    cells = json.loads(path.read_text())["cells"]
    title = "".join(cells[0]["source"])
    assert title.startswith("# ") and "colab.research.google.com/github/" in title
    install = "".join(cells[1]["source"])
    assert 'if "google.colab" in sys.modules:' in install
    assert {colab.INSTALL_TAG, colab.HIDE_TAG} <= set(cells[1]["metadata"]["tags"])  # runs on Colab, not on the page


def _toy_notebook():
    return {
        "cells": [
            {"cell_type": "markdown", "id": "t", "metadata": {}, "source": "# A title\n\nSome prose."},
            {"cell_type": "code", "execution_count": None, "id": "c", "metadata": {}, "outputs": [], "source": "x = 1"},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_colab_update_is_complete_and_idempotent():
    settings = {
        "url": "https://github.com/acme/book",
        "owner": "acme",
        "name": "book",
        "branch": "dev",
        "path_to_book": "",
        "colab_url": "https://colab.research.google.com",
    }
    path = ROOT / "notebooks" / "99_toy.ipynb"
    nb, changes = colab.update_notebook(_toy_notebook(), settings, path)
    assert changes == ["badge", "install cell"]
    title, install = ("".join(nb["cells"][i]["source"]) for i in (0, 1))
    assert title.splitlines()[0] == "# A title" and title.endswith("Some prose.")
    assert "(https://colab.research.google.com/github/acme/book/blob/dev/notebooks/99_toy.ipynb)" in title
    assert "data:image/png;base64," in title  # inline badge: no request to another host
    assert '"deqlib[data,viz] @ git+https://github.com/acme/book@dev"' in install
    assert '"torchattacks==3.5.1", "--no-deps"' in install
    # the recorded results come from the same repository and branch (deqlib.recorded)
    assert '"https://raw.githubusercontent.com/acme/book/dev/experiments/results"' in install
    assert "requests" not in install.replace("old) requests", "")
    assert nb["cells"][2]["source"] == "x = 1"
    assert colab.HIDE_TAG in nb["cells"][1]["metadata"]["tags"]
    again, changes = colab.update_notebook(copy.deepcopy(nb), settings, path)
    assert changes == [] and again == nb
    # a new branch rewrites both places, and nothing else
    moved, changes = colab.update_notebook(copy.deepcopy(nb), {**settings, "branch": "main"}, path)
    assert changes == ["badge", "install cell"] and "@main" in "".join(moved["cells"][1]["source"])
    assert "/book/main/experiments/results" in "".join(moved["cells"][1]["source"])
    assert len(moved["cells"]) == 3


def test_colab_reads_the_one_repository_setting():
    settings = colab.read_settings()
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert settings["url"] == cfg["repository"]["url"].rstrip("/")
    assert settings["branch"] == cfg["repository"]["branch"]
    assert cfg["launch_buttons"]["colab_url"]


def test_colab_refuses_a_notebook_without_title():
    nb = _toy_notebook()
    nb["cells"][0]["source"] = "no title"
    with pytest.raises(SystemExit):
        colab.update_notebook(nb, colab.read_settings(), ROOT / "notebooks" / "x.ipynb")


def test_nbclean_keeps_only_pinned_outputs():
    out = {"output_type": "stream", "name": "stdout", "text": "1\n"}
    nb = _toy_notebook()
    nb["cells"][1].update(execution_count=3, outputs=[out])
    nb["cells"].append(
        {
            "cell_type": "code",
            "execution_count": 4,
            "id": "p",
            "metadata": {"tags": [nbclean.TAG]},
            "outputs": [out],
            "source": "print(1)",
        }
    )
    nb["metadata"]["widgets"] = {"state": {}}
    assert len(nbclean.problems(nb)) == 3
    cleaned = nbclean.clean(nb)
    assert cleaned["cells"][1]["outputs"] == [] and cleaned["cells"][1]["execution_count"] is None
    assert cleaned["cells"][2]["outputs"] == [out] and cleaned["cells"][2]["execution_count"] == 4
    assert nbclean.problems(cleaned) == []


def test_nbclean_turns_comment_markers_into_tags():
    nb = _toy_notebook()
    nb["cells"][1]["source"] = ["# NBVAL_CHECK_OUTPUT\n", "print(1)\n", "# NBVAL_SKIP"]
    assert any("comment marker" in p for p in nbclean.problems(nb))
    cell = nbclean.migrate(nb)["cells"][1]
    assert cell["metadata"]["tags"] == ["nbval-check-output", "nbval-skip"]
    assert "".join(cell["source"]).strip() == "print(1)"
    assert nbclean.is_pinned(cell) and not [p for p in nbclean.problems(nb) if "comment marker" in p]


# ------------------------------------------------------------------------------------------ viz
def _toy(scale, x=0.0):
    W = torch.tensor([[0.9, -0.6], [0.5, 0.4]], dtype=torch.float64)
    W = W / torch.linalg.matrix_norm(W, ord=2)
    return lambda z: torch.tanh(z @ (scale * W).T + x)


Z0 = torch.tensor([[0.5, 0.5], [-0.5, 0.2], [0.1, -0.8]], dtype=torch.float64)


def test_iterate_and_step_sizes():
    traj = viz.iterate(_toy(0.5), Z0, 30)
    assert traj.shape == (31, 3, 2)
    steps = viz.step_sizes(traj)
    assert steps.shape == (3, 30) and np.all(steps[:, -1] < 1e-6)
    with pytest.raises(ValueError):
        viz.iterate(_toy(0.5), Z0, -1)


def test_plots_draw_without_display():
    traj = viz.iterate(_toy(2.5), Z0, 20)
    ax = viz.plot_trajectories_2d(traj, xlim=(-1, 1), ylim=(-1, 1))
    assert len(ax.lines) >= 3
    viz.plot_vector_field(_toy(1.0))
    viz.plot_level_sets(lambda z: (z**2).sum(dim=1))
    viz.plot_cobweb(np.tanh, [0.5, -0.5], 10)
    ax = viz.plot_residuals(viz.step_sizes(traj), labels=["a", "b", "c"])
    assert ax.get_yscale() == "log"
    viz.plot_residuals([np.array([1.0, np.nan, 0.1])])
    viz.plot_entropy_along_iterations(np.random.rand(2, 5))
    viz.plot_robust_accuracy([0, 2 / 255, 8 / 255], {"DEQ": [0.9, 0.5, 0.1]})
    with pytest.raises(ValueError):
        viz.plot_robust_accuracy([0, 1], {"x": [0.5]})
    with pytest.raises(ValueError):
        viz.plot_trajectories_2d(np.zeros((3, 2, 5)))
    fig = viz.fixed_point_small_multiples(_toy, Z0, [0.5, 1.5, 2.5], n_iter=10, ncols=2)
    assert len(fig.axes) == 4


def test_project_2d_keeps_shape_and_spread():
    states = torch.randn(6, 4, 10)
    proj = viz.project_2d(states)
    assert proj.shape == (6, 4, 2)
    assert np.allclose(proj.reshape(-1, 2).mean(0), 0, atol=1e-9)


def _chapter_one_animation_cell():
    nb = json.loads((ROOT / "notebooks" / "01_from_deep_networks_to_equilibria.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if "viz.fixed_point_animation(" in "".join(c["source"])]
    assert len(cells) == 1, "chapter 1 shows one animation"
    return cells[0]


def test_animation_html_is_self_contained():
    """The player as chapter 1 displays it, after the book's build rewrote the page: nothing from another host."""
    cell = _chapter_one_animation_cell()
    assert "plt.close()" in cell and "HTML(anim.to_jshtml())" in cell
    anim = viz.fixed_point_animation(_toy, Z0, [0.5, 1.5], n_iter=5)
    plt.close()  # as chapter 1 does: the figure is only the frame buffer
    raw = anim.to_jshtml()
    assert re.search(r"<link[^>]*font-awesome", raw), "matplotlib's player no longer links Font Awesome: update"
    book_html = _load_book_extension()
    context = {"body": f"<section><p>before</p>{raw}<p>after</p></section>"}
    book_html._offline_players(None, "notebooks/01", "page.html", context, None)
    html = context["body"]
    assert "<img" in html and 'class="animation"' in html
    assert not re.search(r"https?://", html), "the player must not load anything from another host"
    assert "fa fa-" not in html and html.count("anim-icon") == 9
    assert html.startswith("<section><p>before</p>") and html.endswith("<p>after</p></section>")
    assert book_html.offline_players(html) == html  # idempotent: a page without a player is left alone
    assert plt.get_fignums() == []  # the frame buffer figure is closed


# ------------------------------------------------------------------------------------------ widgets
def test_fixed_point_explorer_builds():
    pytest.importorskip("ipywidgets")
    from deqlib import widgets

    w = widgets.fixed_point_explorer(lambda s, x: _toy(s, x), Z0, n_iter=(0, 10, 1, 3))
    names = [c.description for c in w.children if hasattr(c, "description")]
    assert {"weight scale s", "iterations K", "input x"} <= set(names)
    w2 = widgets.fixed_point_explorer(lambda s, x: _toy(s, x), Z0, x=None)
    assert "input x" not in [c.description for c in w2.children if hasattr(c, "description")]
