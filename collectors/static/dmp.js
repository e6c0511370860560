/* dmp tag: page views, consent, track, identify. No dependencies.
   <script async src="https://t.example.com/dmp.js" data-key="wk_..."></script>
   Calls made before it loads queue up in window.dmp.q as [name, args] (see README).
   Each beacon carries the consent in force when its events happened; a consent change is
   itself sent at once as a "consent" event, so a withdrawal drops the cookie right away. */
(function (w, d) {
  "use strict";
  if (w.dmp && w.dmp.granted) return; // loaded twice
  var me = d.currentScript || d.querySelector("script[data-key][src*='dmp.js']");
  if (!me) return;
  var key = me.getAttribute("data-key") || "";
  var url = me.src.replace(/\/dmp\.js(\?.*)?$/, "") + "/collect";
  var STORE = "dmp_consent", CATS = ["analytics", "ads", "email"];
  var pending = [], timer = 0;

  function only(list) {
    var out = [];
    for (var i = 0; list && i < list.length; i++) {
      if (CATS.indexOf(list[i]) >= 0 && out.indexOf(list[i]) < 0) out.push(list[i]);
    }
    return out;
  }

  function stored() {
    try {
      var v = JSON.parse(w.localStorage.getItem(STORE) || "[]");
      return Array.isArray(v) ? only(v) : [];
    } catch (e) { return []; }
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
    w.clearTimeout(timer);
    timer = 0;
    if (!pending.length || !key) return;
    var body = JSON.stringify({ k: key, consent: granted, sentAt: Date.now(), events: pending });
    pending = [];
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
    ev.url = w.location.href;
    ev.title = d.title;
    ev.topics = topics();
    pending.push(ev);
    if (pending.length >= 20) send(false);
    else if (!timer) timer = w.setTimeout(function () { send(false); }, 50);
  }

  var api = {
    page: function (props) {
      push({ type: "page", ref: d.referrer, props: props || {} });
    },
    track: function (name, props) {
      push({ type: "track", event: String(name), props: props || {} });
    },
    identify: function (email, traits) {
      var t = {};
      // Without analytics consent nothing that identifies the visitor leaves the page.
      if (granted.indexOf("analytics") >= 0) {
        if (traits && typeof traits === "object") {
          for (var k in traits) if (Object.prototype.hasOwnProperty.call(traits, k)) t[k] = traits[k];
        }
        if (email) t.email = String(email);
      }
      push({ type: "identify", event: "identify", traits: t });
    },
    consent: function (list) {
      var next = only(list);
      if (next.slice().sort().join() === granted.slice().sort().join()) return;
      send(false); // what happened so far goes out under the consent it happened under
      granted = next;
      try { w.localStorage.setItem(STORE, JSON.stringify(granted)); } catch (e) { /* private */ }
      push({ type: "track", event: "consent", props: { granted: granted.slice() } });
    },
    granted: function () { return granted.slice(); },
    flush: function () { send(false); }
  };

  var queued = (w.dmp && w.dmp.q) || [];
  w.dmp = api;
  for (var i = 0; i < queued.length; i++) {
    var call = queued[i];
    if (api[call[0]]) api[call[0]].apply(api, call[1]);
  }
  if (me.getAttribute("data-auto") !== "off") api.page();
  function leave() { send(true); }
  w.addEventListener("pagehide", leave);
  d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") leave(); });
})(window, document);
