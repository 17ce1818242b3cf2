/*! clickward first-party script (docs/integrations.md, "cw.js"). Keeps the
click id of the landing URL in a cookie of this site and hands it to checkout:
hidden fields of form[data-cw], client_reference_id of Stripe links. */
(function (d, w) {
  "use strict";
  var s = d.currentScript, a = function (n, v) { return (s && s.getAttribute("data-" + n)) || v; };
  var param = a("param", "cw_click"), name = a("cookie", "cw_click");
  var days = parseInt(a("days", "30"), 10), ok = /^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$/;
  var id = new URLSearchParams(w.location.search).get(param);
  if (id && ok.test(id) && days > 0) {
    d.cookie = name + "=" + id + "; Max-Age=" + days * 86400 + "; Path=/; SameSite=Lax" +
      (w.location.protocol === "https:" ? "; Secure" : "");
  } else {
    id = null;
    d.cookie.split("; ").forEach(function (c) {
      var i = c.indexOf("=");
      if (c.slice(0, i) === name && ok.test(c.slice(i + 1))) id = c.slice(i + 1);
    });
  }
  w.clickward = { click: id };
  function fill() {
    if (!id) return;
    d.querySelectorAll("form[data-cw]").forEach(function (f) {
      var n = f.getAttribute("data-cw") || param, i = f.querySelector('input[name="' + n + '"]');
      if (!i) { i = d.createElement("input"); i.type = "hidden"; i.name = n; f.appendChild(i); }
      i.value = id;
    });
    d.querySelectorAll('a[href^="https://buy.stripe.com/"]').forEach(function (l) {
      var u = new URL(l.href);
      u.searchParams.set("client_reference_id", id);
      l.href = u.toString();
    });
  }
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", fill); else fill();
})(document, window);
