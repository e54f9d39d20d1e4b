// A button or link with data-confirm asks before it acts (instead of an inline onclick, which the
// Content-Security-Policy refuses). Loaded on every page by base.html.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("[data-confirm]") : null;
    if (target && !window.confirm(target.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
})();
