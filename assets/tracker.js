// Live tracker: listens to the ticket's server-sent events and updates the
// timeline and progress in place; when the status or the AI result changes it
// fetches the page again and swaps the ticket card in place (no reload), so
// the server renders the answer, the escalation box and the rating form. Every event carries the full state and every (re)connection
// starts with a snapshot, so nothing is missed. Without EventSource (or when
// the stream is refused) it polls the status endpoint every 5 s. Without
// JavaScript the page still works (reload by hand).
(function () {
  "use strict";
  var root = document.getElementById("tracker");
  if (!root) return;
  var card = root;
  var statusUrl = root.getAttribute("data-status-url");
  var eventsUrl = root.getAttribute("data-events-url");
  var processing = root.getAttribute("data-processing");
  var status = root.getAttribute("data-status");
  var messages = root.getAttribute("data-messages");
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

  // Applies one state; re-renders the card when the status or result changed.
  function apply(s) {
    var bar = document.getElementById("progress");
    if (bar) { bar.value = s.progress; bar.textContent = s.progress + "%"; }
    renderTimeline(s.timeline || []);
    card.setAttribute("data-live", "1");
    if (s.processing !== processing || s.status !== status || String(s.messages) !== messages) {
      processing = s.processing;
      status = s.status;
      messages = String(s.messages);
      // Let the timeline animation show before the card is re-rendered.
      setTimeout(swap, 700);
    }
    return false;
  }

  // Re-renders the ticket card from the server, in place.
  function swap() {
    if (!window.fetch || !window.DOMParser) { window.location.reload(); return; }
    fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("tracker");
        if (!next) return;
        var fresh = document.importNode(next, true);
        // Keep a reply being typed.
        var typing = card.querySelector("#reply-body");
        var kept = fresh.querySelector("#reply-body");
        if (typing && kept) kept.value = typing.value;
        card.replaceWith(fresh);
        card = root = fresh;
        card.setAttribute("data-live", "1");
        card.setAttribute("data-swapped", String((Number(card.getAttribute("data-swapped")) || 0) + 1));
      })
      .catch(function () { window.location.reload(); });
  }

  function poll() {
    if (!window.fetch) return;
    fetch(statusUrl, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { return s ? apply(s) : false; })
      .catch(function () { return false; /* offline for a moment */ })
      .then(function () { setTimeout(poll, INTERVAL); });
  }

  if (window.EventSource && eventsUrl) {
    var es = null;
    var connect = function () {
      var source = new EventSource(eventsUrl);
      source.addEventListener("status", function (e) {
        try { apply(JSON.parse(e.data)); } catch (err) { /* malformed: wait for the next one */ }
      });
      source.onerror = function () {
        // CONNECTING: the browser retries by itself. CLOSED: refused, so poll.
        if (source.readyState === 2 && es === source) { card.setAttribute("data-live", "poll"); poll(); }
      };
      es = source;
    };
    // Closed when the page is left, so a page kept in the back/forward cache
    // holds no connection; reopened when it comes back (the stream starts
    // with a snapshot, so nothing is missed).
    window.addEventListener("pagehide", function () {
      if (es) { es.close(); es = null; }
    });
    window.addEventListener("pageshow", function (e) {
      if (e.persisted && !es) connect();
    });
    connect();
  } else {
    setTimeout(poll, processing === "done" ? INTERVAL : 1000);
  }
})();
