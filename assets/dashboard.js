// Live dashboard: on every change the admin event stream reports, re-fetches
// this page (same filters) and swaps in the new counts, charts and rows.
// Without JavaScript or EventSource the page is simply static.
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root || !window.EventSource || !window.fetch || !window.DOMParser) return;
  var parts = ["counts", "charts", "result-count", "ticket-rows", "pager"];
  var pending = null;

  function refresh() {
    pending = null;
    fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        parts.forEach(function (id) {
          var now = document.getElementById(id), next = doc.getElementById(id);
          if (now && next) now.replaceWith(document.importNode(next, true));
        });
        root.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* try again on the next event */ });
  }

  function schedule() { if (!pending) pending = setTimeout(refresh, 300); }
  var es = null;
  function connect() {
    es = new EventSource(root.getAttribute("data-events-url"));
    es.addEventListener("hello", function () { root.setAttribute("data-live", "1"); });
    es.addEventListener("ticket", schedule);
    es.addEventListener("resync", schedule);
  }
  // Close the stream when the page is left: a page kept in the back/forward
  // cache would otherwise hold one of the browser's six connections to this
  // host, and a few filter clicks later the next page waits a minute for one.
  window.addEventListener("pagehide", function () {
    if (es) { es.close(); es = null; }
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && !es) { connect(); schedule(); }
  });
  connect();
})();
