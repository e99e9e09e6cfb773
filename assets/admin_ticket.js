// Staff ticket page: "Use the draft" puts the AI's draft into the reply box
// (the reply is then recorded as AI-assisted), and the conversation and the
// work panel refresh in place when anything changes on this ticket (a
// customer's reply, a colleague's note, assignment, changes), keeping what
// is being typed. Without JavaScript the page works with reloads.
(function () {
  "use strict";
  var conv = document.getElementById("conversation");
  if (!conv) return;
  var ticket = conv.getAttribute("data-ticket");

  function wireDraft() {
    var use = document.getElementById("use-draft");
    var draft = document.getElementById("ai-draft");
    var body = document.getElementById("staff-body");
    var flag = document.getElementById("ai-assisted");
    if (!use || !draft || !body) return;
    use.addEventListener("click", function () {
      body.value = draft.textContent.trim();
      if (flag) flag.value = "1";
      var internal = document.getElementById("internal");
      if (internal) internal.checked = false;
      body.focus();
    });
  }

  // Canned replies: inserted at the cursor (or at the end), to edit before sending.
  function wireCanned() {
    var body = document.getElementById("staff-body");
    Array.prototype.forEach.call(document.querySelectorAll(".insert-canned"), function (b) {
      b.addEventListener("click", function () {
        var src = document.getElementById("canned-" + b.getAttribute("data-reply"));
        if (!src || !body) return;
        var text = src.textContent.trim();
        var at = typeof body.selectionStart === "number" ? body.selectionStart : body.value.length;
        body.value = body.value.slice(0, at) + text + body.value.slice(at);
        body.focus();
      });
    });
  }

  function swap(ids) {
    if (!window.fetch || !window.DOMParser) return;
    fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var old = document.getElementById(id);
          var next = doc.getElementById(id);
          if (!old || !next) return;
          var fresh = document.importNode(next, true);
          // Keep a reply being typed (and whether it came from the draft).
          ["staff-body", "ai-assisted"].forEach(function (f) {
            var a = old.querySelector("#" + f);
            var b = fresh.querySelector("#" + f);
            if (a && b) b.value = a.value;
          });
          var ai = old.querySelector("#internal");
          var bi = fresh.querySelector("#internal");
          if (ai && bi) bi.checked = ai.checked;
          old.replaceWith(fresh);
        });
        conv = document.getElementById("conversation");
        conv.setAttribute("data-live", "1");
        wireDraft();
        wireCanned();
      })
      .catch(function () { /* try again on the next event */ });
  }

  // The collision hint: this page says every 10 s (and when typing starts)
  // that it has the ticket open; the hint names the others.
  var hint = document.getElementById("collision");
  var me = hint ? hint.getAttribute("data-me") : "";
  var csrf = hint ? hint.getAttribute("data-csrf") : "";
  var typingUntil = 0;
  function showViewers(viewers) {
    if (!hint) return;
    var others = (viewers || []).filter(function (v) { return v.name !== me; });
    if (!others.length) { hint.hidden = true; hint.textContent = ""; return; }
    hint.textContent = others.map(function (v) {
      return v.name + (v.typing ? " is typing a reply" : " also has this ticket open");
    }).join("; ") + ".";
    hint.hidden = false;
  }
  function beat(extra) {
    if (!window.fetch || !me) return;
    var body = { typing: Date.now() < typingUntil };
    if (extra && extra.leave) body = { leave: true };
    fetch("/api/tickets/" + ticket + "/presence", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
      keepalive: !!(extra && extra.leave)
    }).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d && d.viewers) showViewers(d.viewers); })
      .catch(function () { /* the next beat tries again */ });
  }
  document.addEventListener("input", function (e) {
    if (!e.target || e.target.id !== "staff-body") return;
    var was = Date.now() < typingUntil;
    typingUntil = Date.now() + 8000;
    if (!was) beat();
  });
  beat();
  setInterval(beat, 10000);
  window.addEventListener("pagehide", function () { beat({ leave: true }); });

  wireDraft();
  wireCanned();
  if (!window.EventSource) return;
  var es = null;
  var connect = function () {
    var source = new EventSource("/api/admin/events");
    source.addEventListener("hello", function () {
      if (conv) conv.setAttribute("data-live", "1");
    });
    source.addEventListener("presence", function (e) {
      try {
        var d = JSON.parse(e.data);
        if (String(d.id) === ticket) showViewers(d.viewers);
      } catch (err) { /* malformed: wait for the next one */ }
    });
    source.addEventListener("ticket", function (e) {
      try {
        var d = JSON.parse(e.data);
        if (String(d.id) === ticket) swap(["conversation", "work"]);
      } catch (err) { /* malformed: wait for the next one */ }
    });
    es = source;
  };
  window.addEventListener("pagehide", function () {
    if (es) { es.close(); es = null; }
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && !es) { connect(); swap(["conversation", "work"]); }
  });
  connect();
})();
