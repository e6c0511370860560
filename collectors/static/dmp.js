/* dmp tag: page views, consent, track, identify. No dependencies.
   <script async src="https://t.example.com/dmp.js" data-key="wk_..."></script>
   Calls made before it loads queue up in window.dmp.q (see README). */
(function (w, d) {
  "use strict";
  var me = d.currentScript || d.querySelector("script[data-key][src*='dmp.js']");
  if (!me) return;
  var key = me.getAttribute("data-key") || "";
  var base = me.src.replace(/\/dmp\.js(\?.*)?$/, "");
  var STORE = "dmp_consent", CATS = ["analytics", "ads", "email"];
  var pending = [], timer = 0;

  function stored() {
    try { return JSON.parse(w.localStorage.getItem(STORE) || "[]"); } catch (e) { return []; }
  }
  var granted = stored();

  function id() {
    var c = w.crypto, a = new Uint8Array(16), s = "";
    if (c && c.getRandomValues) c.getRandomValues(a);
    else for (var i = 0; i < 16; i++) a[i] = Math.random() * 256;
    for (var j = 0; j < 16; j++) s += (a[j] < 16 ? "0" : "") + a[j].toString(16);
    return s;
  }

  function topics() {
    var m = d.querySelector('meta[name="dmp:topics"]');
    return m ? m.content.split(",").map(function (t) { return t.trim(); }).filter(Boolean) : [];
  }

  function send(beacon) {
    var body = JSON.stringify({ k: key, consent: granted, sentAt: Date.now(), events: pending });
    pending = [];
    timer = 0;
    var url = base + "/collect";
    if (beacon && w.navigator.sendBeacon &&
        w.navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }))) return;
    if (w.fetch) {
      w.fetch(url, { method: "POST", body: body, credentials: "include", keepalive: true,
                     headers: { "Content-Type": "text/plain" } }).catch(function () {});
    }
  }

  function push(ev) {
    ev.id = id();
    ev.ts = Date.now();
    pending.push(ev);
    if (pending.length >= 20) send(false);
    else if (!timer) timer = w.setTimeout(function () { send(false); }, 50);
  }

  var api = {
    page: function (props) {
      push({ type: "page", url: w.location.href, ref: d.referrer, title: d.title,
             topics: topics(), props: props || {} });
    },
    track: function (name, props) {
      push({ type: "track", event: String(name), url: w.location.href, topics: topics(),
             props: props || {} });
    },
    identify: function (email, traits) {
      var t = {};
      for (var k in traits || {}) if (Object.prototype.hasOwnProperty.call(traits, k)) t[k] = traits[k];
      if (email) t.email = String(email);
      push({ type: "identify", event: "identify", url: w.location.href, traits: t });
    },
    consent: function (list) {
      granted = (list || []).filter(function (c) { return CATS.indexOf(c) >= 0; });
      try { w.localStorage.setItem(STORE, JSON.stringify(granted)); } catch (e) { /* private mode */ }
      if (pending.length) send(false);
    },
    granted: function () { return granted.slice(); },
    flush: function () { if (pending.length) send(false); }
  };

  var queued = (w.dmp && w.dmp.q) || [];
  w.dmp = api;
  for (var i = 0; i < queued.length; i++) {
    var call = queued[i];
    if (api[call[0]]) api[call[0]].apply(api, call[1]);
  }
  if (me.getAttribute("data-auto") !== "off") api.page();
  w.addEventListener("pagehide", function () { if (pending.length) send(true); });
})(window, document);
