"""Small HTML fixes for the web book (loaded through `sphinx.local_extensions` in _config.yml).

- sphinx-thebe registers its inline configuration script ``const THEBE_JS_URL = ...`` through the registry and
  the builder; when the builder re-reads the registry the script appears twice on every page and the second copy
  throws "Identifier 'THEBE_JS_URL' has already been declared" in the browser console. Keep one copy of every
  script (same file, or same inline body).
- The ``chapter-map`` directive of the landing page lists every planned chapter and links only those that are
  built (listed in ``_toc.yml``), so a chapter appears as a link the moment it enters the table of contents.
- myst-nb adds the ipywidgets manager (require.js, the 3.6 MB HTML manager, the widget state) to every page of a
  notebook that *ran* a widget, even when no widget is displayed on the page (the book removes live widgets'
  outputs and shows a static counterpart). Keep those scripts only on pages that display a widget view.
- matplotlib's JavaScript animation player (``HTML(anim.to_jshtml())`` in a notebook) links a Font Awesome
  stylesheet on a CDN for its button icons. Drop the link and draw the buttons with text symbols
  (:func:`offline_players`), so that the book loads nothing from another host; in Jupyter and Colab the
  notebook shows matplotlib's own player.
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

#: Text symbols for the buttons of matplotlib's animation player, by Font Awesome class (styled by
#: ``.anim-icon`` in book/_static/custom.css).
PLAYER_ICONS = {
    "fa-minus": "&minus;",
    "fa-fast-backward": "&#x21E4;",  # leftwards arrow to bar
    "fa-step-backward": "&lsaquo;",
    "fa-play fa-flip-horizontal": "&#x25C0;",  # black left-pointing triangle
    "fa-pause": "&#x275A;&#x275A;",
    "fa-play": "&#x25B6;",
    "fa-step-forward": "&rsaquo;",
    "fa-fast-forward": "&#x21E5;",  # rightwards arrow to bar
    "fa-plus": "+",
}
_FONT_AWESOME_LINK = re.compile(r"<link[^>]*font-awesome[^>]*>\s*")


def offline_players(html: str) -> str:
    """``html`` with the Font Awesome link of every animation player removed and its icons drawn as text."""
    html = _FONT_AWESOME_LINK.sub("", html)
    for cls, symbol in PLAYER_ICONS.items():
        html = html.replace(f'<i class="fa {cls}"></i>', f'<span class="anim-icon" aria-hidden="true">{symbol}</span>')
    return html


def _key(js):
    filename = getattr(js, "filename", js) or ""
    attrs = getattr(js, "attributes", {}) or {}
    return filename, tuple(sorted((k, str(v)) for k, v in attrs.items()))


def _is_widget_script(js, widget_files) -> bool:
    filename, attrs = _key(js)
    return filename in widget_files or dict(attrs).get("type") == WIDGET_STATE


def _fix_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    widget_files = {"_static/" + path if "://" not in path else path for path in app.config.nb_ipywidgets_js}
    shows_widgets = WIDGET_VIEW in (context.get("body") or "")
    seen, kept = set(), []
    for js in scripts:
        key = _key(js)
        if key in seen or (not shows_widgets and _is_widget_script(js, widget_files)):
            continue
        seen.add(key)
        kept.append(js)
    context["script_files"] = kept


def _offline_players(app, pagename, templatename, context, doctree):
    if context.get("body"):
        context["body"] = offline_players(context["body"])


class ChapterMap(SphinxDirective):
    """A numbered list of chapters, one per content line ``NN | Title | what it covers``.

    A chapter whose notebook ``notebooks/NN_*`` is part of the build is linked; the others are listed as in
    preparation, without a link.
    """

    has_content = True

    def run(self):
        built = sorted(d for d in self.env.found_docs if d.startswith("notebooks/"))
        items = nodes.enumerated_list(enumtype="arabic", prefix="", suffix=".")
        for line in self.content:
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split("|")]
            if len(parts) != 3 or not re.fullmatch(r"\d{2}", parts[0]):
                raise self.error(f"chapter-map: expected 'NN | Title | description', got {line!r}")
            number, title, description = parts
            docname = next((d for d in built if d.split("/", 1)[1].startswith(number + "_")), None)
            para = nodes.paragraph()
            if docname:
                ref = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget="/" + docname,
                                            refexplicit=True, refwarn=True)
                ref += nodes.inline(title, title)
                para += ref
            else:
                para += nodes.Text(title)
                para += nodes.emphasis(" (in preparation)", " (in preparation)")
            para += nodes.Text(": " + description)
            item = nodes.list_item()
            item["classes"].append("chapter-built" if docname else "chapter-planned")
            item += para
            items += item
        items["start"] = 1
        return [items]


def setup(app):
    app.add_directive("chapter-map", ChapterMap)
    app.connect("html-page-context", _fix_scripts, priority=900)
    app.connect("html-page-context", _offline_players)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
