// Live updates for the watchkeeper console: no framework, no CDN.
// The server says when the event log moved (server-sent events on /console/live); the page
// then fetches itself and swaps the regions marked data-live, leaving forms being typed in
// alone. Without JavaScript the page works the same, refreshed by hand.
(function () {
  "use strict";
  if (!window.EventSource || !window.fetch || !window.DOMParser) { return; }
  var busy = false, again = false;

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var fresh = doc.getElementById(el.id);
      if (!fresh) { return; }
      // Keep <details> the reader opened.
      var open = {};
      el.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
      el.innerHTML = fresh.innerHTML;
      el.querySelectorAll("details[id]").forEach(function (d) {
        if (d.id in open) { d.open = open[d.id]; }
      });
    });
    var count = doc.getElementById("pending-count"), mine = document.getElementById("pending-count");
    if (count && mine) { mine.textContent = count.textContent; }
    document.body.setAttribute("data-live-at", String(Date.now()));
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html) { swap(html); } })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  // From the log position this page was rendered at: nothing committed since is missed.
  var at = parseInt(document.body.getAttribute("data-position") || "0", 10) || 0;
  var source = new EventSource("/console/live?after=" + at);
  source.addEventListener("change", refresh);
  source.addEventListener("hello", function () {
    document.body.setAttribute("data-live", "connected");
  });
})();
