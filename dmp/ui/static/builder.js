/* dmp UI, segment builder: live checks as the form changes (no inline script: CSP). */
"use strict";
(function () {
  document.documentElement.classList.add("js");
  var builder = function () { return document.getElementById("builder"); };
  // A select or checkbox changes the form's shape (other fields): the builder is rebuilt.
  // Text only changes values: the check, the YAML view and the preview follow it.
  var reshapes = function (el) {
    return (el.tagName === "SELECT" && !/-add$/.test(el.name)) || el.type === "checkbox";
  };
  var inForm = function (el) {
    var form = builder();
    return form && form.contains(el) && el.id !== "yaml";
  };
  document.addEventListener("change", function (event) {
    if (!inForm(event.target) || !reshapes(event.target)) return;
    var button = document.getElementById("rebuild");
    if (button) button.click();
  });
  // Typing while a redrawn form settles would reach a checker htmx has not wired yet (the
  // check would be lost): it is asked for once the new form has settled.
  var settling = false, owed = false;
  var check = function () { if (window.htmx) window.htmx.trigger("#checker", "dmp-check"); };
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "builder") settling = true;
  });
  document.addEventListener("input", function (event) {
    var el = event.target;
    if (!inForm(el) || el.tagName === "SELECT" || reshapes(el)) return;
    if (settling) { owed = true; return; }
    check();
  });
  // Answers carry slot texts (problems beside their condition, members meeting each).
  var fill = function () {
    document.querySelectorAll(".slot-data [data-slot]").forEach(function (item) {
      var slot = document.getElementById(item.getAttribute("data-slot"));
      if (slot) slot.textContent = item.textContent.trim();
      var name = item.getAttribute("data-invalid");
      var field = name && document.getElementById(name === "id" ? "seg-id" : name + "-value");
      if (field) field.toggleAttribute("aria-invalid", item.textContent.trim() !== "");
    });
    // The YAML view follows the form (once per answer: what the user types there stays).
    document.querySelectorAll("[data-yaml-text]").forEach(function (item) {
      var yaml = document.getElementById("yaml");
      if (yaml) yaml.value = item.textContent;
      item.remove();
    });
  };
  // After a button rebuilt the form, the focus goes back to that button (or its group).
  var pressed = null;
  document.addEventListener("htmx:beforeRequest", function (event) {
    var el = event.detail.elt;
    pressed = el && el.tagName === "BUTTON" && el.id !== "rebuild" ? el.value : null;
  });
  document.addEventListener("htmx:afterSettle", function () {
    fill();
    if (settling) {
      settling = false;
      if (owed) { owed = false; check(); }
    }
    document.querySelectorAll("[aria-busy]").forEach(function (el) {
      if (!el.querySelector(".computing")) el.removeAttribute("aria-busy");
    });
    if (!pressed) return;
    var again = document.querySelector('#builder button[value="' + CSS.escape(pressed) + '"]');
    var parent = pressed.replace(/^remove:(.*)-[0-9]+$/, "add:$1");
    var target = again || document.querySelector('#builder button[value="' + CSS.escape(parent) + '"]');
    if (target) target.focus();
    pressed = null;
  });
})();
