// Habitat: live refresh of the #live region, throughput charts, small helpers.
// Vanilla JS, no dependencies; runs under a CSP without inline scripts.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var PERIOD_MS = 5000;
  var STREAM_MS = 1000;

  function el(name, attrs) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }

  // A bar chart of {minute, finished} points, drawn as inline SVG.
  function drawCharts(root) {
    root.querySelectorAll(".spark[data-chart]").forEach(function (box) {
      var points;
      try { points = JSON.parse(box.getAttribute("data-chart")); } catch (e) { return; }
      var w = 180, h = 34, n = points.length || 1, gap = 1;
      var max = Math.max.apply(null, points.map(function (p) { return p.finished; }).concat([1]));
      var svg = el("svg", { width: w, height: h, viewBox: "0 0 " + w + " " + h });
      svg.appendChild(el("line", { x1: 0, y1: h - 0.5, x2: w, y2: h - 0.5, "class": "base" }));
      points.forEach(function (p, i) {
        var bh = p.finished ? Math.max(1, (p.finished / max) * (h - 2)) : 0;
        var bw = w / n - gap;
        var rect = el("rect", { x: i * (w / n), y: h - bh, width: bw, height: bh, "class": "bar" });
        var title = el("title");
        title.textContent = p.minute.slice(11, 16) + " UTC: " + p.finished + " finished";
        rect.appendChild(title);
        svg.appendChild(rect);
      });
      box.textContent = "";
      box.appendChild(svg);
    });
  }

  function liveEnabled() {
    var box = document.getElementById("auto-refresh");
    return box ? box.checked : false;
  }

  // Light polling: fetch this same URL as a fragment and swap #live in place.
  function refresh() {
    var live = document.getElementById("live");
    if (!live || live.getAttribute("data-live") !== "on" || !liveEnabled() || document.hidden) return;
    if (live.querySelector("details[open]")) return;  // don't close what the user opened
    fetch(window.location.href, { headers: { "X-Habitat-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        live.innerHTML = html;
        drawCharts(live);
        live.setAttribute("data-refreshed", new Date().toISOString());
      })
      .catch(function () { /* keep the last good view */ });
  }

  // Tails the open streams of a task page: asks the stream's JSON endpoint for the
  // chunks after data-next and appends them as text (never as HTML), keeping at most
  // data-cap of them. Reads the DOM on each tick, so a #live refresh that replaces
  // the sections is picked up where it stands.
  function chunkText(chunk) {
    return typeof chunk === "string" ? chunk : JSON.stringify(chunk);
  }

  // A stream begun after the page loaded: while the task can still write, the list
  // of its streams is asked for too, and a section is added (built as DOM, names as
  // text) for each new one, which the tailer then fills from seq 0.
  function watchStreams() {
    var box = document.getElementById("streams");
    if (!box || box.getAttribute("data-watch") !== "true" || box.getAttribute("data-busy") === "1") return;
    box.setAttribute("data-busy", "1");
    fetch(box.getAttribute("data-url"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (body === null) return;
        var known = {};
        box.querySelectorAll("section.stream").forEach(function (s) { known[s.getAttribute("data-stream")] = true; });
        body.streams.forEach(function (s) {
          if (known[s.stream]) return;
          var section = document.createElement("section");
          section.className = "stream";
          section.id = "stream-" + s.stream;
          section.setAttribute("data-stream", s.stream);
          section.setAttribute("data-url", box.getAttribute("data-url") + "/" + encodeURIComponent(s.stream));
          section.setAttribute("data-next", "0");
          section.setAttribute("data-closed", "false");
          section.setAttribute("data-cap", box.getAttribute("data-cap"));
          var h3 = document.createElement("h3");
          var name = document.createElement("code");
          name.textContent = s.stream;
          var state = document.createElement("span");
          state.className = "stream-state";
          state.textContent = "open";
          h3.appendChild(name);
          h3.appendChild(document.createTextNode(" "));
          h3.appendChild(state);
          var pre = document.createElement("pre");
          pre.className = "stream-chunks";
          section.appendChild(h3);
          section.appendChild(pre);
          box.appendChild(section);
          var none = box.querySelector(".no-streams");
          if (none) none.parentNode.removeChild(none);
        });
        if (body.taskEnded) box.setAttribute("data-watch", "false");
      })
      .catch(function () { /* try again on the next tick */ })
      .then(function () { box.removeAttribute("data-busy"); });
  }

  function tailStreams() {
    if (!liveEnabled() || document.hidden) return;
    watchStreams();
    document.querySelectorAll("section.stream[data-closed='false']").forEach(function (box) {
      if (box.getAttribute("data-busy") === "1") return;
      box.setAttribute("data-busy", "1");
      var url = box.getAttribute("data-url") + "?from=" + encodeURIComponent(box.getAttribute("data-next"));
      fetch(url, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (body === null) return;
          var pre = box.querySelector("pre.stream-chunks");
          body.chunks.forEach(function (c) {
            var span = document.createElement("span");
            span.className = typeof c.chunk === "string" ? "chunk" : "chunk json";
            span.setAttribute("data-seq", String(c.seq));
            span.title = "seq " + c.seq + ", attempt " + c.attempt;
            span.textContent = chunkText(c.chunk);
            pre.appendChild(span);
          });
          var cap = parseInt(box.getAttribute("data-cap"), 10) || 200;
          while (pre.children.length > cap) pre.removeChild(pre.firstChild);
          if (body.chunks.length) pre.scrollTop = pre.scrollHeight;
          box.setAttribute("data-next", String(body.next));
          if (body.closed) {
            box.setAttribute("data-closed", "true");
            box.querySelector(".stream-state").textContent = "closed";
          }
        })
        .catch(function () { /* try again on the next tick */ })
        .then(function () { box.removeAttribute("data-busy"); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
    var box = document.getElementById("auto-refresh");
    if (box) {
      box.checked = localStorage.getItem("habitat.live") !== "off";
      box.addEventListener("change", function () {
        localStorage.setItem("habitat.live", box.checked ? "on" : "off");
      });
    }
    setInterval(refresh, PERIOD_MS);
    setInterval(tailStreams, STREAM_MS);
    document.addEventListener("click", function (ev) {
      var t = ev.target.closest ? ev.target.closest("[data-json-toggle]") : null;
      if (!t) return;
      var open = t.getAttribute("data-json-toggle") === "open";
      document.querySelectorAll("details.json").forEach(function (d) { d.open = open; });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  });
})();
