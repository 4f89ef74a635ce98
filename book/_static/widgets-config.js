// Loaded just before require.js and the ipywidgets HTML manager (nb_ipywidgets_js in _config.yml), only on pages
// that display a widget (book/_ext/book_html.py drops them elsewhere).
(function () {
  // The manager's modules and icon fonts live in _static/vendor/html-manager/; without this it would resolve
  // them next to the page (and fetch unknown widget modules from a CDN).
  var base = new URL("vendor/html-manager/", document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = base;
  // a global `require` defined before require.js loads is its configuration
  window.require = { paths: { "@jupyter-widgets/html-manager/dist": base.replace(/\/$/, "") } };

  // The manager typesets widget output with MathJax 2's `MathJax.Hub.Queue`; the book runs MathJax 3, which has
  // no Hub. Give whatever object ends up as window.MathJax a Hub that forwards to MathJax 3.
  var hub = {
    Queue: function () {
      if (window.MathJax && window.MathJax.typesetPromise) { window.MathJax.typesetPromise(); }
    }
  };
  var current = window.MathJax;
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) {
      current = value;
      if (value && typeof value === "object" && !value.Hub) { value.Hub = hub; }
    }
  });
  if (current && !current.Hub) { current.Hub = hub; }
})();
