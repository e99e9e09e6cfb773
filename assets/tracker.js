// Live refresh for the ticket tracker: polls the cheap status endpoint every
// 5 s and updates the timeline and progress in place; when the AI result or the
// status changes, it reloads so the server renders the full answer. Without
// JavaScript the page still works (reload by hand).
(function () {
  "use strict";
  var root = document.getElementById("tracker");
  if (!root || !window.fetch) return;
  var url = root.getAttribute("data-status-url");
  var processing = root.getAttribute("data-processing");
  var status = root.getAttribute("data-status");
  var INTERVAL = 5000;

  function renderTimeline(steps) {
    steps.forEach(function (s) {
      var li = root.querySelector('.step[data-step="' + s.step + '"]');
      if (!li) return;
      li.className = "step step-" + s.state;
      var st = li.querySelector(".step-state");
      if (st) st.textContent = s.state.replace("_", " ");
    });
  }

  function tick() {
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        var bar = document.getElementById("progress");
        if (bar) { bar.value = s.progress; bar.textContent = s.progress + "%"; }
        renderTimeline(s.timeline || []);
        if (s.processing !== processing || s.status !== status) {
          // Let the timeline animation show before the full re-render.
          setTimeout(function () { window.location.reload(); }, 600);
          return "stop";
        }
      })
      .catch(function () { /* offline for a moment: try again next tick */ })
      .then(function (r) { if (r !== "stop") setTimeout(tick, INTERVAL); });
  }
  setTimeout(tick, processing === "done" ? INTERVAL : 1000);
})();
