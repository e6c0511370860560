/* dmp UI: the few lines of script the pages need (no inline script anywhere: CSP). */
"use strict";
(function () {
  var token = function () {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };
  // htmx requests carry the session's CSRF token, as forms do in their hidden field.
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRFToken"] = token();
  });
  // Buttons with data-copy="#id" copy that element's text (snippets, new keys).
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      button.setAttribute("data-copied", "true");
      setTimeout(function () { button.removeAttribute("data-copied"); }, 2000);
    }, function () { /* the text stays selectable by hand */ });
  });
  // Forms with data-confirm ask before they are sent (remove, revoke, sync now).
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
