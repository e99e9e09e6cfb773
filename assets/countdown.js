// Service-level countdowns: every element with data-due (an RFC 3339 time)
// shows the time left to it, to the minute, as the server wrote it
// (src/web/assets.rs `countdown`): "in 1h 5m", "12m overdue". Updated every
// 20 s, and on elements a live refresh swaps in.
(function () {
  "use strict";
  function text(due, now) {
    var secs = Math.round((due - now) / 1000);
    var mins = Math.ceil(Math.abs(secs) / 60);
    var d = Math.floor(mins / 1440), h = Math.floor((mins % 1440) / 60), m = mins % 60;
    var t = d > 0 ? d + "d " + h + "h" : h > 0 ? h + "h " + m + "m" : m + "m";
    return secs >= 0 ? "in " + t : t + " overdue";
  }
  function tick() {
    var now = Date.now();
    var els = document.querySelectorAll("[data-due]");
    for (var i = 0; i < els.length; i++) {
      var due = Date.parse(els[i].getAttribute("data-due"));
      if (isNaN(due)) continue;
      els[i].textContent = text(due, now);
      els[i].classList.toggle("overdue", due < now);
    }
  }
  tick();
  setInterval(tick, 20000);
})();
