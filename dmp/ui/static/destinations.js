/* Destinations form: only the checked segments' target fields are shown. */
"use strict";
(function () {
  var boxes = function () {
    return document.querySelectorAll(".dest-checks input[type=checkbox][data-segment]");
  };
  var update = function () {
    boxes().forEach(function (box) {
      document.querySelectorAll('[data-target-of="' + CSS.escape(box.value) + '"]').forEach(function (row) {
        row.hidden = !box.checked;
      });
    });
  };
  document.addEventListener("change", function (event) {
    if (event.target.matches(".dest-checks input[type=checkbox]")) update();
  });
  document.addEventListener("DOMContentLoaded", update);
})();
