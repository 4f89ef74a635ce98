"""Small HTML fixes for the web book (loaded through `sphinx.local_extensions` in _config.yml).

- sphinx-thebe registers its inline configuration script ``const THEBE_JS_URL = ...`` through the registry and
  the builder; when the builder re-reads the registry the script appears twice on every page and the second copy
  throws "Identifier 'THEBE_JS_URL' has already been declared" in the browser console. Keep one copy of every
  script (same file, or same inline body).
- myst-nb adds the ipywidgets manager (require.js, the 3.6 MB HTML manager, the widget state) to every page of a
  notebook that *ran* a widget, even when no widget is displayed on the page (the book removes live widgets'
  outputs and shows a static counterpart). Keep those scripts only on pages that display a widget view.
"""

from __future__ import annotations

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


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


def setup(app):
    app.connect("html-page-context", _fix_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
