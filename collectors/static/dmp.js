/* dmp tag: page views, consent, track, identify. No dependencies.
   <script async src="https://t.example.com/dmp.js" data-key="wk_..."></script>
   Calls made before it loads queue up in window.dmp.q as [name, args] (see README).
   Consent, the first source present wins (docs/embedding.md):
   1. an IAB TCF v2.2 CMP (window.__tcfapi): on "tcloaded" and "useractioncomplete" its purpose
      consents, by the site's rules (DMP_TCF_*, filled in by dmp), grant analytics and ads; each
      beacon carries its TC string, from which dmp derives the consent itself. Until the CMP
      first answers (at most 2 s) events wait. gdprApplies false: TCF says nothing.
   2. Google Consent Mode v2 (gtag("consent", "default"|"update", {...}) in window.dataLayer):
      analytics_storage granted -> analytics; ad_storage, ad_user_data, ad_personalization
      granted -> ads.
   3. the page's own dmp.consent([...]), for sites without a CMP.
   Each beacon carries the consent in force when its events happened; a consent change is
   itself sent at once as a "consent" event, so a withdrawal drops the cookie right away.
   With analytics consent dmp answers the uid it set (Dmp-Uid); the tag keeps it in a cookie of
   the page's site (_dmp_uid) and sends it as "u": where the browser does not return dmp's own
   cookie (dmp on another site) the visitor stays one person. A withdrawal sends it one last
   time, for dmp to forget it, and deletes it. A refused beacon's reason goes to the console. */
(function (w, d) {
  "use strict";
  if (w.dmp && w.dmp.granted) return; // loaded twice
  var me = d.currentScript || d.querySelector("script[data-key][src*='dmp.js']");
  if (!me) return;
  var key = me.getAttribute("data-key") || "";
  var url = me.src.replace(/\/dmp\.js(\?.*)?$/, "") + "/collect";
  var RULES = __DMP_TCF_RULES__;
  var STORE = "dmp_consent", UID = "_dmp_uid", CATS = ["analytics", "ads", "email"];
  var SOURCES = ["page", "consent mode", "tcf"];
  var pending = [], timer = 0, level = 0, tcString = "", forget = "", hold = false;

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
  function has(c) { return granted.indexOf(c) >= 0; }

  function held() {
    var m = d.cookie.match(/(?:^|;\s*)_dmp_uid=([A-Za-z0-9_-]{16,64})(?:;|$)/);
    return m ? m[1] : "";
  }

  function keep(uid) { // "" deletes; each answer renews it (Safari keeps it 7 days from then)
    d.cookie = UID + "=" + uid + "; Path=/; SameSite=Lax; Max-Age=" + (uid ? 34128000 : 0) +
      (w.location.protocol === "https:" ? "; Secure" : "");
  }

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

  function answered(r) {
    if (r.ok) {
      var uid = r.headers.get("Dmp-Uid");
      if (uid && has("analytics")) keep(uid);
      return;
    }
    return r.json().then(function (p) { // readable: dmp answers refusals with CORS headers
      w.console.warn("dmp: beacon refused (" + r.status + " " + p.title + "): " + p.detail);
    });
  }

  function send(beacon) {
    w.clearTimeout(timer);
    timer = 0;
    if (!pending.length || !key || (hold && !beacon)) return;
    var body = { k: key, consent: granted, sentAt: Date.now(), events: pending };
    var u = has("analytics") ? held() : forget;
    if (u) body.u = u;
    if (tcString) body.gdpr_consent = tcString;
    forget = "";
    pending = [];
    body = JSON.stringify(body);
    // sendBeacon only as the page goes: its answer (the uid, a refusal) cannot be read.
    if (beacon && w.navigator.sendBeacon &&
        w.navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }))) return;
    if (w.fetch) {
      w.fetch(url, { method: "POST", body: body, credentials: "include", keepalive: true,
                     headers: { "Content-Type": "text/plain" } })
        .then(answered).catch(function () {});
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
    else soon();
  }

  function soon() { if (!timer) timer = w.setTimeout(function () { send(false); }, 50); }

  function release() { hold = false; soon(); } // what the page queues meanwhile goes along

  // The consent ``list`` said by source ``from`` (0 page, 1 Consent Mode, 2 TCF), under TC
  // string ``tc``: a weaker source than one that has spoken is ignored.
  function decide(list, from, tc) {
    if (from < level) return;
    level = from;
    var next = only(list);
    var same = next.slice().sort().join() === granted.slice().sort().join();
    if (same && tc === tcString) return;
    // What happened so far goes out under the consent it happened under; while the CMP
    // has not answered yet, what waits happened under what it now says.
    if (!hold) send(false);
    tcString = tc;
    if (same) return;
    if (has("analytics") && next.indexOf("analytics") < 0 && held()) {
      forget = held();
      keep("");
    }
    granted = next;
    try { w.localStorage.setItem(STORE, JSON.stringify(granted)); } catch (e) { /* private */ }
    push({ type: "track", event: "consent", props: { granted: granted.slice() } });
  }

  function holds(rule, said) {
    for (var i = 0; i < rule.length; i++) {
      var any = false;
      for (var j = 0; j < rule[i].length; j++) any = any || said[rule[i][j]] === true;
      if (!any) return false;
    }
    return true;
  }

  function tcf() {
    if (typeof w.__tcfapi !== "function") return;
    hold = true;
    var waited = w.setTimeout(release, 2000);
    w.__tcfapi("addEventListener", 2, function (tc, ok) {
      if (!ok || !tc) return;
      var s = tc.eventStatus, p = (tc.purpose && tc.purpose.consents) || {};
      var v = (tc.vendor && tc.vendor.consents) || {};
      if (tc.gdprApplies !== false && (s === "tcloaded" || s === "useractioncomplete")) {
        var out = [], vendor = !RULES.vendor || v[RULES.vendor] === true;
        if (vendor && holds(RULES.analytics, p)) out.push("analytics");
        if (vendor && holds(RULES.ads, p)) out.push("ads");
        decide(out, 2, tc.tcString || "");
      }
      if (hold) { w.clearTimeout(waited); release(); }
    });
  }

  function consentMode() {
    var dl = w.dataLayer, state = {}, seen = false;
    if (!dl || typeof dl.push !== "function") return;
    function read(e) { // gtag pushes its arguments object: ["consent", "default", {...}]
      if (!e || e[0] !== "consent" || (e[1] !== "default" && e[1] !== "update") ||
          !e[2] || typeof e[2] !== "object") return false;
      for (var k in e[2]) if (Object.prototype.hasOwnProperty.call(e[2], k)) state[k] = e[2][k];
      return (seen = true);
    }
    function apply() {
      var out = [];
      function on(k) { return state[k] === "granted"; }
      if (on("analytics_storage")) out.push("analytics");
      if (on("ad_storage") && on("ad_user_data") && on("ad_personalization")) out.push("ads");
      decide(out, 1, "");
    }
    for (var i = 0; i < dl.length; i++) read(dl[i]);
    if (seen) apply();
    var original = dl.push;
    dl.push = function () {
      var result = original.apply(dl, arguments), any = false;
      for (var j = 0; j < arguments.length; j++) any = read(arguments[j]) || any;
      if (any) apply();
      return result;
    };
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
      if (has("analytics")) {
        if (traits && typeof traits === "object") {
          for (var k in traits) if (Object.prototype.hasOwnProperty.call(traits, k)) t[k] = traits[k];
        }
        if (email) t.email = String(email);
      }
      push({ type: "identify", event: "identify", traits: t });
    },
    consent: function (list) { decide(list, 0, ""); },
    granted: function () { return granted.slice(); },
    status: function () {
      return { granted: granted.slice(), source: SOURCES[level], tcf: !!tcString, held: !!held() };
    },
    flush: function () { send(false); }
  };

  var queued = (w.dmp && w.dmp.q) || [];
  w.dmp = api;
  consentMode();
  tcf();
  for (var i = 0; i < queued.length; i++) {
    var call = queued[i];
    if (api[call[0]]) api[call[0]].apply(api, call[1]);
  }
  if (me.getAttribute("data-auto") !== "off") api.page();
  function leave() { send(true); }
  w.addEventListener("pagehide", leave);
  d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") leave(); });
})(window, document);
