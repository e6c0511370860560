/* Sites and keys: a new key's page is the answer to a POST; it puts the keys list in its
   place in the history, so reloading or going back never sends the form again (and the
   key, shown once, is not shown again). */
"use strict";
(function () {
  var page = document.querySelector("[data-replace-url]");
  if (page && window.history && window.history.replaceState) {
    window.history.replaceState(null, "", page.getAttribute("data-replace-url"));
  }
})();
