// Loads dmp's tag as the snippet does (the stub queues calls made before it is there),
// from the dmp address and write key in the page's query: ?dmp=http://host:port&key=wk_...
window.dmp = window.dmp || { q: [] };
["consent", "track", "identify", "page"].forEach(function (m) {
  window.dmp[m] = window.dmp[m] || function () { window.dmp.q.push([m, arguments]); };
});
window.loadDmp = function () {
  var query = new URLSearchParams(window.location.search);
  var script = document.createElement("script");
  script.async = true;
  script.src = query.get("dmp") + "/dmp.js";
  script.setAttribute("data-key", query.get("key"));
  document.head.appendChild(script);
};
